"""The launcher path's custom resources (``fma.llm-d.ai``): their types and their CRDs."""
