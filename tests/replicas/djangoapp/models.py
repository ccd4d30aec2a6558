from __future__ import annotations

from django.db import models


class Item(models.Model):
    value = models.CharField(max_length=50)

    class Meta:
        app_label = "djangoapp"
        db_table = "django_probe"
