from django.apps import AppConfig


class CatalogConfig(AppConfig):
    name = "rgzlabel.catalog"
    label = "catalog"
