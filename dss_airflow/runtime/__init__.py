"""Code that runs inside the code env (container or venv): standard library only."""
