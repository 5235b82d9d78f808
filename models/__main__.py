"""`python -m models`: list the catalogue of model families and the tasks each can do."""

from models import list_models, supported_tasks

for family in list_models():
    print(f"{family:<6} {', '.join(supported_tasks(family))}")
