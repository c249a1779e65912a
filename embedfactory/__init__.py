"""embedfactory: framework-free domain code of the embedding data factory.

Stages (personas, tasks, examples, revised, verdicts), the LLM client, the store, filtering and
training live here and import no Prefect; `flows/` and `tasks/` wire them into Prefect.
"""
__version__ = "0.1.0"
