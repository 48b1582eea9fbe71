#!/usr/bin/env bash
# Start a one-node SLURM cluster on localhost (slurmctld + slurmd + munge, with slurmdbd/MariaDB accounting so
# that sacct — and submitit's job states — work). For CI and development; needs root and Debian's packages:
#
#   sudo slurm/start_cluster.sh --install     # apt-get the packages first (about 25 s), then start
#   sudo slurm/start_cluster.sh               # start (about 4 s); idempotent: a running cluster is left alone
#   sudo slurm/stop_cluster.sh
#
# Partition `debug`, node `localhost` with this machine's CPUs; profile slurm/clusters/localhost.yaml.
set -euo pipefail

if [[ "${1:-}" == "--install" ]]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq slurmctld slurmd slurm-client munge slurmdbd mariadb-server >/dev/null
fi
for bin in slurmctld slurmd munged slurmdbd mysqld; do
  command -v "$bin" >/dev/null || [[ -x "/usr/sbin/$bin" ]] || {
    echo "start_cluster: $bin is not installed; run: sudo $0 --install" >&2; exit 2; }
done
[[ $(id -u) == 0 ]] || { echo "start_cluster: run as root (sudo $0)" >&2; exit 2; }

mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
chown munge:munge /run/munge
MEM_MB=$(( $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) - 2048 ))
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=local
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobCompType=jobcomp/none
MailProg=/bin/true
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
KillWait=5
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=${MEM_MB} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
cat > /etc/slurm/slurmdbd.conf <<CONF
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
LogFile=/var/log/slurm/slurmdbd.log
PidFile=/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurmpw
StorageLoc=slurm_acct_db
CONF
chmod 600 /etc/slurm/slurmdbd.conf

running() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null && ! grep -q '^State:.*Z' "/proc/$(cat "$1")/status"; }

# munge: checked by encoding a credential, not by pgrep (a zombie munged still matches pgrep)
munge -n >/dev/null 2>&1 || runuser -u munge -- /usr/sbin/munged
service mariadb start >/dev/null 2>&1 || service mysql start >/dev/null
mysql -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db; CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmpw'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
running /run/slurmdbd.pid || slurmdbd
for _ in $(seq 50); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.2; done
sacctmgr -n list cluster format=cluster | grep -qw local || sacctmgr -i add cluster local >/dev/null
running /run/slurmctld.pid || slurmctld
running /run/slurmd.pid || slurmd -N localhost
for _ in $(seq 100); do
  timeout 5 sinfo -h -o %T 2>/dev/null | grep -qE '^idle|^mixed|^allocated' && { sinfo; exit 0; }
  sleep 0.2
done
echo "start_cluster: the node did not become idle; see /var/log/slurm/" >&2
sinfo >&2 || true
exit 1
