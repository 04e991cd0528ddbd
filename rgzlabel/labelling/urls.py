from django.urls import path

from rgzlabel.labelling import views

app_name = "labelling"
urlpatterns = [
    path("", views.label, name="label"),
    path("vote/", views.vote, name="vote"),
]
