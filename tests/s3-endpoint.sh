# Sourced by tests/s3.sh and benches/s3.sh: an S3 endpoint from moto[server] on loopback.
# `s3_endpoint LOGDIR BUCKET` installs moto into $VENV (default /tmp/meterlake-s3), starts
# it on a free port (its pid in MOTO; the caller's EXIT trap stops it), exports the AWS
# variables meterlake reads, and creates BUCKET; it fails naming the log if that fails.
s3_endpoint() {
  local logdir=$1 bucket=$2
  VENV=${VENV:-/tmp/meterlake-s3}
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check 'moto[server]==5.1.22'
  local port
  port=$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$VENV/bin/moto_server" -H 127.0.0.1 -p "$port" > "$logdir/moto.log" 2>&1 &
  MOTO=$!
  export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_ALLOW_HTTP=true
  export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
  for _ in $(seq 100); do curl -sf "$AWS_ENDPOINT_URL/" > /dev/null && break; sleep 0.2; done
  curl -sf -X PUT "$AWS_ENDPOINT_URL/$bucket" > /dev/null \
    || { cat "$logdir/moto.log"; echo "no S3 endpoint at $AWS_ENDPOINT_URL" >&2; return 1; }
}
