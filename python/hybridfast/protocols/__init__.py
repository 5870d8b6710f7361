"""Client protocols: the OpenAI Chat Completions and Anthropic Messages APIs, translated to
and from the gateway's own request and answer forms (`hybridfast.types`)."""
