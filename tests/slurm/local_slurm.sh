#!/usr/bin/env bash
# A single-node Slurm on loopback for tests/test_launchers.py::test_real_slurm (opt-in), as root on Debian:
#   apt-get install slurmctld slurmd slurm-client munge
#   tests/slurm/local_slurm.sh start DIR    # writes DIR/slurm.conf, starts munged, slurmctld, slurmd
#   SLURM_CONF=DIR/slurm.conf SPLITBENCH_SLURM_TEST=1 python -m pytest tests/test_launchers.py -k real_slurm
#   tests/slurm/local_slurm.sh stop DIR     # ends slurmd and slurmctld (by their pid files)
# No accounting daemon: sacct is unavailable, so submitit learns that a job ended from its result file.
set -euo pipefail
action=${1:?start|stop}
dir=$(realpath -m "${2:?a folder}")
case "$action" in
start)
    mkdir -p "$dir"/{state,spool,log}
    host=$(hostname -s)
    cpus=$(nproc)
    cat > "$dir/slurm.conf" <<CONF
ClusterName=splitbench
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
SwitchType=switch/none
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
    if ! munge -n >/dev/null 2>&1; then
        mkdir -p /run/munge && chown munge:munge /run/munge
        chown -R munge:munge /var/log/munge /var/lib/munge /etc/munge
        su -s /bin/sh munge -c munged
    fi
    export SLURM_CONF="$dir/slurm.conf"
    slurmctld
    slurmd
    for _ in $(seq 30); do
        if sinfo -h -o %t 2>/dev/null | grep -q idle; then echo "SLURM_CONF=$SLURM_CONF"; exit 0; fi
        sleep 1
    done
    echo "slurm did not come up; see $dir/log" >&2
    exit 1
    ;;
stop)
    for pidfile in "$dir/slurmd.pid" "$dir/slurmctld.pid"; do
        [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
    done
    ;;
esac
