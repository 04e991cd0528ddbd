from django.apps import AppConfig


class LearningConfig(AppConfig):
    name = "rgzlabel.learning"
    label = "learning"

    def ready(self) -> None:
        # The volunteer's page (labelling) shows the model's effect without importing this app.
        from rgzlabel.labelling.services import SUMMARY_EXTRAS
        from rgzlabel.learning.effects import model_effect

        SUMMARY_EXTRAS["model_effect"] = model_effect
