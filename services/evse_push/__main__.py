from services.evse_push.app import SERVICE, create_app
from shared.service import run_worker

run_worker(SERVICE, create_app)
