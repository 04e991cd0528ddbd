from django.apps import AppConfig


class ScienceConfig(AppConfig):
    name = "rgzlabel.science"
    label = "science"
