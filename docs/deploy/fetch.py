"""Fetch a run's input from S3 before the run: ``python fetch.py s3://bucket/key local-path``.
(connect-bulk reads a local file; a container's command fetches it first. boto3 is in the
image already, as aioboto3's.)"""

import sys

import boto3

source, target = sys.argv[1], sys.argv[2]
bucket, _, key = source.removeprefix("s3://").partition("/")
boto3.client("s3").download_file(bucket, key, target)
