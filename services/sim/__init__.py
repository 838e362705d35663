"""The simulation and load-testing harness: participants, scenarios, the in-process
simulation, the live market, strategies, reports, the dashboard, loadtest and demo."""
