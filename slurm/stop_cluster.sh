#!/usr/bin/env bash
# Stop what slurm/start_cluster.sh started (slurmd, slurmctld, slurmdbd, munged, MariaDB).
set -uo pipefail
for pidfile in /run/slurmd.pid /run/slurmctld.pid /run/slurmdbd.pid /run/munge/munged.pid; do
  [[ -f "$pidfile" ]] && kill "$(cat "$pidfile")" 2>/dev/null
done
service mariadb stop >/dev/null 2>&1 || service mysql stop >/dev/null 2>&1 || true
sleep 1
for pidfile in /run/slurmd.pid /run/slurmctld.pid /run/slurmdbd.pid; do
  [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null && kill -9 "$(cat "$pidfile")" 2>/dev/null
  rm -f "$pidfile"
done
exit 0
