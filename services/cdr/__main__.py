from services.cdr.app import SERVICE, create_app
from shared.service import run_worker

run_worker(SERVICE, create_app)
