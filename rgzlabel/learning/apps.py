from django.apps import AppConfig


class LearningConfig(AppConfig):
    name = "rgzlabel.learning"
    label = "learning"
