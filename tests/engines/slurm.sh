#!/usr/bin/env bash
# A one-node Slurm cluster on 127.0.0.1 for the engine test, run as root (CI, or a
# developer's machine with Debian's slurmctld, slurmd, slurm-client and munge):
#
#   tests/engines/slurm.sh start DIR   # writes DIR/slurm.conf, starts munged, slurmctld
#                                      # and slurmd, waits for the node; prints
#                                      # `export SLURM_CONF=DIR/slurm.conf`
#   tests/engines/slurm.sh stop DIR    # stops the three daemons by the PIDs it recorded
#
# No systemd, no cgroups, no name resolution, nothing written outside DIR but munge's
# /run/munge socket folder.
set -euo pipefail
cmd=${1:-} dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }
mkdir -p "$dir"
dir=$(realpath "$dir")

stop() {
  # Each daemon is stopped by the PID recorded at start, never by name; slurmctld removes
  # its own pid file before it exits, so ours is what we wait on.
  for d in slurmd slurmctld munged; do
    f="$dir/$d.started-pid"
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
  done
}

if [ "$cmd" = stop ]; then stop; exit 0; fi
[ "$cmd" = start ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }

host=$(hostname -s)
cpus=$(nproc)
mkdir -p "$dir/state" "$dir/spool"
cat > "$dir/slurm.conf" <<CONF
ClusterName=strata-ci
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=batch_sched_delay=0
MinJobAge=5
DependencyParameters=kill_invalid_depend
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=ci Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$dir/slurm.conf

# munged needs its socket folder, owned by munge, which systemd would have made.
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
chmod 0755 /run/munge
if ! [ -S /run/munge/munge.socket.2 ] || ! munge -n >/dev/null 2>&1; then
  runuser -u munge -- /usr/sbin/munged --foreground > "$dir/munged.log" 2>&1 &
  echo $! > "$dir/munged.started-pid"
  for _ in $(seq 50); do munge -n >/dev/null 2>&1 && break; sleep 0.1; done
fi
/usr/sbin/slurmctld -D -f "$SLURM_CONF" > "$dir/slurmctld.stdout" 2>&1 &
echo $! > "$dir/slurmctld.started-pid"
/usr/sbin/slurmd -D -f "$SLURM_CONF" > "$dir/slurmd.stdout" 2>&1 &
echo $! > "$dir/slurmd.started-pid"
for _ in $(seq 100); do
  if sinfo -h -o '%t' 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
    echo "export SLURM_CONF=$SLURM_CONF"
    exit 0
  fi
  sleep 0.2
done
echo "slurm.sh: the node did not come up; see $dir/slurmctld.log and $dir/slurmd.log" >&2
tail -n 20 "$dir/slurmctld.log" "$dir/slurmd.log" >&2 || true
stop
exit 1
