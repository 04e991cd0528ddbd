from django.contrib import admin
from django.urls import include, path

from rgzlabel.labelling import views as labelling_views
from rgzlabel.science import views as science_views

urlpatterns = [
    path("", science_views.home, name="home"),
    path("favicon.ico", science_views.favicon, name="favicon"),
    path("accounts/signup/", labelling_views.signup, name="signup"),
    path("accounts/login/", labelling_views.LoginView.as_view(), name="login"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("label/", include("rgzlabel.labelling.urls")),
    path("sources/", include("rgzlabel.catalog.urls")),
    path("jobs/", include("rgzlabel.learning.urls")),
    path("science/exports/", include("rgzlabel.science.export_urls")),
    path("science/", include("rgzlabel.science.urls")),
    path("api/", include("rgzlabel.science.api_urls")),
    path("admin/", admin.site.urls),
]
