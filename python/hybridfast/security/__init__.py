"""Security and governance: rate limits, virtual keys created at run time with an audit log,
guardrails, secrets and the `harden` checks. Each feature attaches to the pipeline through
its seams (`hybridfast.pipeline.hooks`) and is switched on by its config section."""
