"""Dataset sources: one module per family, each registering the spec kinds it reads with
`pixprompt.data.registry.source`."""
