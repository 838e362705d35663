"""docker-compose.yml cannot be started here (no Docker engine), so it is checked against
the CLI: the same services, the same topics, commands the CLI accepts."""

from __future__ import annotations

from pathlib import Path

import yaml

from schemas import ACCOUNT_EVENTS, CLAIMS, DEADLETTER, KEYS, MARKET_DATA, STATE, VENUE, topic_partitions
from schemas.topics import ROUTES
from services.cli import main
from services.launch import SERVICES
from services.liquidation import spec as liquidation_spec
from services.matching import spec as matching_spec
from services.risk import spec as risk_spec

ROOT = Path(__file__).resolve().parent.parent


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_runs_kafka_in_kraft_mode_and_one_container_per_service():
    services = compose()["services"]
    assert set(services) == {"kafka", "topics", *SERVICES}
    kafka = services["kafka"]["environment"]
    assert kafka["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    for name in SERVICES:
        assert services[name]["build"] == "." and services[name]["command"][0] == name


def test_every_container_command_is_one_the_cli_accepts():
    for name, service in compose()["services"].items():
        if name == "kafka":
            continue
        command = service["command"]
        assert command[0] in main.commands, f"{name}: perpsim has no command {command[0]!r}"
        # parsing with the real CLI rejects unknown options and bad values
        main.commands[command[0]].make_context(command[0], list(command[1:]))
        assert command[command.index("--bootstrap") + 1] == "kafka:9092"


def test_every_service_runs_with_one_venue_profile():
    services = compose()["services"]
    venues = {s["command"][s["command"].index("--venue") + 1] for n, s in services.items() if n in SERVICES}
    assert venues == {"hyperliquid"}  # one place to read it; binance is the other choice


def test_compose_creates_the_topics_the_services_use_with_one_partition_count():
    services = compose()["services"]
    counts = {int(s["command"][s["command"].index("--partitions") + 1]) for n, s in services.items() if n != "kafka"}
    assert len(counts) == 1
    creator = services["topics"]["command"]  # `perpsim topics` creates topic_partitions(<its count>)
    assert creator[0] == "topics" and int(creator[creator.index("--partitions") + 1]) in counts
    created = set(topic_partitions(counts.pop()))
    # what the services read (their input topics) and write (ROUTES), and what every service uses
    used = {spec.input_topic for spec in (matching_spec({}), risk_spec({}), liquidation_spec({}))}
    used |= {route.topic for table in ROUTES.values() for routes in table.values() for route in routes}
    used |= {MARKET_DATA, ACCOUNT_EVENTS, STATE, KEYS, DEADLETTER, VENUE, CLAIMS}  # inputs and shared topics
    assert used <= created, used - created


def test_dockerfile_installs_the_package_and_runs_the_cli():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip install" in dockerfile and 'ENTRYPOINT ["perpsim"]' in dockerfile
    for package in ("schemas", "exchange", "services"):
        assert f"COPY {package}" in dockerfile
