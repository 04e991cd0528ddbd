from django.urls import path

from rgzlabel.learning import views

app_name = "learning"
urlpatterns = [
    path("", views.job_list, name="jobs"),
    path("<int:job_id>.json", views.job_status, name="job-status"),
]
