import importlib
import os

import matplotlib
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rgzlabel.settings")
application = get_wsgi_application()

#: Modules the pages import on first use, loaded when a web process starts (a gunicorn worker
#: loads this module before it accepts a request), so no first request pays the import: with
#: four workers each paying ~2 s of scikit-learn and modAL for ml.policies on its first dashboard,
#: the dashboard's p95 was 1.5 s at 10k sources. Not loaded in gunicorn's master (no
#: ``preload_app``): a worker forked after these imports hung on its first request. Never torch:
#: search by image embeds in the query worker.
WARM_IMPORTS = (
    "ml.policies",
    "ml.preprocess",
    "ml.fits_io",
    "ml.consensus",
    "ml.datasets",
    "ml.layout",
    "ml.skyindex",
    "matplotlib.pyplot",
    "astropy.coordinates",
    "rgzlabel.science.services",
    "rgzlabel.science.api",
    "rgzlabel.science.exports",
    "rgzlabel.science.predictions",
)
matplotlib.use("Agg")  # the plots render to PNG; no display in a web process
for _module in WARM_IMPORTS:
    importlib.import_module(_module)
