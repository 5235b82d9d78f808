"""`python -m models`: list the catalogue of model families, the tasks each can do and the data it learns from."""

from models import catalogue

for family in catalogue.families():
    print(f"{family.name:<6} tasks: {', '.join(family.tasks):<42} data: {', '.join(family.modalities)}")
