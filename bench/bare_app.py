"""The baseline for bench_webhook.py: bare Flask answering the webhook path with <Response/>."""
from flask import Flask, Response

app = Flask(__name__)


@app.post("/webhook/whatsapp")
def webhook():
    return Response('<?xml version="1.0" encoding="UTF-8"?><Response/>', mimetype="text/xml")
