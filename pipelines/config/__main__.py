"""`python -m pipelines.config [params.yaml]`: validate params.yaml and print the resolved params."""

from pipelines.config import main

main()
