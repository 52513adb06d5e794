#!/usr/bin/python3
# Fetches still pictures of a Kinesis video stream with boto3's GetImages, as the service makes
# them for machine learning and previews: a JPEG (or PNG) every --interval ms of the last
# --seconds (or of --seconds from --start, ms since the epoch), by producer time, written into
# --out as <stream>-<ms since the epoch>.jpg. No GStreamer is needed: the service (or kvs-local,
# with --endpoint) decodes the video. It prints `image <ms> <file> <bytes>` for each picture and
# `missing <ms> <reason>` for each time without one (NO_MEDIA: nothing recorded then), then
# `images <n> missing <m>`; it exits with 1 when there was no picture at all.
#
# Credentials come from boto3's usual chain (AWS_ACCESS_KEY_ID..., a profile); the region from
# --region, else the environment (AWS_REGION, AWS_DEFAULT_REGION) or the profile.
import argparse
import base64
import datetime
import os
import sys
import time

import boto3
import botocore.config

parser = argparse.ArgumentParser()
parser.add_argument("--stream", default="cam1")
parser.add_argument("--endpoint", help="control-plane URL (default: the region's)")
parser.add_argument("--region", help="AWS region (default: the environment's or the profile's)")
parser.add_argument("--start", type=int, help="ms since the epoch (default: --seconds ago)")
parser.add_argument("--seconds", type=int, default=30, help="how much to sample (at most 300)")
parser.add_argument("--interval", type=int, default=3000,
                    help="ms between pictures (200 to 20000; default 3000)")
parser.add_argument("--format", choices=["JPEG", "PNG"], default="JPEG")
parser.add_argument("--width", type=int, help="scale to this width (the height follows)")
parser.add_argument("--out", default="images", help="directory for the pictures")
args = parser.parse_args()

session = boto3.session.Session(region_name=args.region or os.environ.get("AWS_REGION"))
if session.region_name is None:
    sys.exit("no region: give --region or set AWS_REGION")
# Older botocore models (Debian 12's) refuse intervals under 3000 ms before sending them; the
# service takes 200 ms and more.
config = botocore.config.Config(parameter_validation=args.interval >= 3000)
video = session.client("kinesisvideo", endpoint_url=args.endpoint)
endpoint = video.get_data_endpoint(StreamName=args.stream, APIName="GET_IMAGES")["DataEndpoint"]
archived = session.client("kinesis-video-archived-media", endpoint_url=endpoint, config=config)

start_ms = args.start if args.start is not None else int(time.time() * 1000) - args.seconds * 1000
utc = datetime.timezone.utc
request = {
    "StreamName": args.stream,
    "ImageSelectorType": "PRODUCER_TIMESTAMP",
    "StartTimestamp": datetime.datetime.fromtimestamp(start_ms / 1000, utc),
    "EndTimestamp": datetime.datetime.fromtimestamp(start_ms / 1000 + args.seconds, utc),
    "SamplingInterval": args.interval,
    "Format": args.format,
}
if args.width:
    request["WidthPixels"] = args.width
os.makedirs(args.out, exist_ok=True)
suffix = "jpg" if args.format == "JPEG" else "png"
images = missing = 0
while True:
    page = archived.get_images(**request)
    for image in page["Images"]:
        ms = round(image["TimeStamp"].timestamp() * 1000)
        if "ImageContent" not in image:
            missing += 1
            print(f"missing {ms} {image.get('Error', 'no image')}", flush=True)
            continue
        data = base64.b64decode(image["ImageContent"])
        path = os.path.join(args.out, f"{args.stream}-{ms}.{suffix}")
        with open(path, "wb") as f:
            f.write(data)
        images += 1
        print(f"image {ms} {path} {len(data)}", flush=True)
    if "NextToken" not in page:
        break
    request["NextToken"] = page["NextToken"]
print(f"images {images} missing {missing}")
sys.exit(0 if images else 1)
