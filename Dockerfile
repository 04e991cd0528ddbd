FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    NUMBA_CACHE_DIR=/data/numba-cache
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
RUN useradd --create-home rgz && mkdir -p /data && chown rgz /data
USER rgz
EXPOSE 8000
CMD ["gunicorn", "rgzlabel.wsgi:application", "--bind", "0.0.0.0:8000"]
