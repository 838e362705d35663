"""asyncio shells around the core: bus adapters, services, CLI."""
