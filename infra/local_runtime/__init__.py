"""The local runtime: the whole machine on one computer, no Docker, no AWS account.

It reads template.yaml, creates the resources in an AWS emulator (a moto server it starts, or AWS_ENDPOINT_URL),
and drives the template's own Lambda handlers with API Gateway HTTP (payload 2.0), API Gateway WebSocket and SQS
event-source events. Development machinery: production code never imports it.
"""
