#!/usr/bin/env bash
# Make sure RabbitMQ (127.0.0.1:5672) and Redis (127.0.0.1:6379) answer; start the locally installed
# ones that are not running; say clearly what is missing otherwise.
set -u
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { for _ in $(seq 1 60); do port_open "$1" && return 0; sleep 1; done; return 1; }
missing=0

if ! port_open 6379; then
  if command -v redis-server >/dev/null; then
    echo "starting Redis on 127.0.0.1:6379"
    mkdir -p /var/lib/redis /var/log/redis 2>/dev/null
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log >/dev/null \
      || redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
    wait_port 6379 || { echo "ERROR: Redis did not come up on 127.0.0.1:6379" >&2; missing=1; }
  else
    echo "ERROR: Redis is not running on 127.0.0.1:6379 and redis-server is not installed (apt-get install redis-server)" >&2
    missing=1
  fi
fi

# The node may be up with its application stopped (`rabbitmqctl stop_app`, e.g. by an interrupted
# broker-restart test of `make soak`): start the application, not a second node.
if ! port_open 5672 && command -v rabbitmqctl >/dev/null && timeout 20 rabbitmqctl -q ping >/dev/null 2>&1; then
  echo "starting the RabbitMQ application (its node runs, the application was stopped)"
  timeout 120 rabbitmqctl -q start_app >/dev/null 2>&1
  wait_port 5672 || { echo "ERROR: the RabbitMQ application did not come up on 127.0.0.1:5672" >&2; missing=1; }
fi

if ! port_open 5672; then
  if command -v rabbitmq-server >/dev/null; then
    echo "starting RabbitMQ on 127.0.0.1:5672"
    # Every node of the test suite declares about 35 quorum queues, each holding files open: the
    # 1024 open files that `su rabbitmq` (PAM) leaves the broker run out when test runs overlap, and
    # then it stops accepting connections. Start it with the hard limit where we can.
    server=/usr/lib/rabbitmq/bin/rabbitmq-server
    if [ "$(id -u)" = 0 ] && id rabbitmq >/dev/null 2>&1 && [ -x "$server" ]; then
      su rabbitmq -s /bin/sh -c "ulimit -n \$(ulimit -Hn) 2>/dev/null; $server -detached" >/dev/null 2>&1
    else
      rabbitmq-server -detached >/dev/null 2>&1
    fi
    wait_port 5672 || { echo "ERROR: RabbitMQ did not come up on 127.0.0.1:5672" >&2; missing=1; }
  else
    echo "ERROR: RabbitMQ is not running on 127.0.0.1:5672 and rabbitmq-server is not installed (apt-get install rabbitmq-server)" >&2
    missing=1
  fi
fi

# Prometheus and promtool (the monitoring tests run the real ones: tests/unit/test_monitoring_files.py,
# tests/e2e/test_monitoring.py). The Debian package brings both. Not needed by `make run`, so a missing
# one is reported, not fatal; the tests fail with the same message.
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Prometheus (Debian package prometheus) for the monitoring tests"
    { DEBIAN_FRONTEND=noninteractive apt-get update -qq \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; } >/dev/null \
      || echo "ERROR: apt-get install prometheus failed" >&2
    # The package may start its own service on :9090; the tests run their own Prometheus on a free port.
    { service prometheus stop || systemctl stop prometheus; } >/dev/null 2>&1 || true
  fi
  command -v promtool >/dev/null && command -v prometheus >/dev/null \
    || echo "WARNING: prometheus/promtool not installed (apt-get install prometheus): the monitoring tests will fail" >&2
fi
exit $missing
