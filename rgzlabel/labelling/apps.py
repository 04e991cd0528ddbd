from django.apps import AppConfig


class LabellingConfig(AppConfig):
    name = "rgzlabel.labelling"
    label = "labelling"
