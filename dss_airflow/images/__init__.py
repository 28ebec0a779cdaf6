"""Container images dss_airflow builds itself: the air-gapped Debian base and the code-env images on top."""
