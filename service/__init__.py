"""notesrag's HTTP service: FastAPI app, settings, QA engine, answerers, widget assets."""
