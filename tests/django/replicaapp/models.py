from __future__ import annotations

from django.db import models


class Item(models.Model):
    value = models.CharField(max_length=50)

    class Meta:
        app_label = "replicaapp"
        db_table = "django_probe"


class Counter(models.Model):
    """The counter of the monotonic-reads scenario (tests/replica_helpers.py creates it)."""

    n = models.BigIntegerField()

    class Meta:
        app_label = "replicaapp"
        db_table = "monotonic_probe"
        managed = False
