#!/usr/bin/env bash
# A real node for the local control plane (cluster.sh): containerd, runc and the CNI plugins
# from Debian's packages, kubelet, kube-proxy and CoreDNS built from their Go modules
# (build-node.sh), registered with the API server beside the kwok nodes as `sidereal-node`.
#   node.sh up IMAGES_DIR   start it and import every image archive in IMAGES_DIR
#   node.sh down            stop it and remove everything it made
#   node.sh status
#   node.sh ctr ARGS...     containerd's ctr on the node's images and containers
# Everything runs in a network namespace of its own (`sidereal-node`, joined to the host by one
# veth pair, 10.200.0.0/30), so the bridge, the pod addresses (10.244.0.0/24), kube-proxy's
# iptables rules and CoreDNS's address (10.200.0.2:53) vanish with it. Files live under one
# work folder; `down` removes them. Runs as root.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/versions.env"
cache=${SIDEREAL_CACHE:-$HOME/.cache/sidereal}
cluster=${SIDEREAL_CLUSTER:-sidereal-e2e}
node=sidereal-node
netns=sidereal-node
work=${SIDEREAL_NODE_DIR:-$cache/node-run/$cluster}
host_ip=10.200.0.1 node_ip=10.200.0.2 pod_cidr=10.244.0.0/24
sock="$work/containerd/containerd.sock"
# Debian's runc: one built from its Go module without the seccomp tag (~/go/bin, first on some
# PATHs) refuses every pod.
runc_bin=/usr/sbin/runc
[ -x "$runc_bin" ] || runc_bin=$(command -v runc || echo /usr/sbin/runc)
admin_kubeconfig="${KWOK_WORKDIR:-$cache/kwok}/$cluster.kubeconfig"

# nsenter, not `ip netns exec`: that also remounts /sys, hiding the cgroup mounts the kubelet
# and runc need.
in_ns() { nsenter --net="/run/netns/$netns" "$@"; }
log() { echo "node: $*" >&2; }
fail() { echo "error: $*" >&2; exit 1; }

# Starts a daemon in the node's namespace, in a session of its own; its pid goes to pids/.
daemon() {
  local name=$1; shift
  in_ns setsid "$@" >"$work/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$work/pids/$name"
}

# Waits for a condition (a command) with a deadline; shows the daemon's log when it fails.
wait_for() {
  local what=$1 seconds=$2 logname=$3; shift 3
  local deadline=$(( $(date +%s) + seconds ))
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "error: $what not within ${seconds}s; $logname log:" >&2
      tail -n 40 "$work/logs/$logname.log" >&2 || true
      return 1
    fi
    sleep 0.2
  done
}

preflight() {
  [ "$(id -u)" = 0 ] || fail "the real node needs root (network namespace, containers)"
  local missing=()
  for tool in containerd runc ctr ip iptables conntrack; do command -v "$tool" >/dev/null || missing+=("$tool"); done
  [ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
  if [ ${#missing[@]} -gt 0 ]; then
    fail "missing ${missing[*]}; install Debian's packages: apt-get install containerd runc containernetworking-plugins iptables conntrack"
  fi
  [ -f "$admin_kubeconfig" ] || fail "no local control plane ($admin_kubeconfig); start it with e2e/scripts/cluster.sh up"
}

network_up() {
  ip netns add "$netns"
  ip link add sdr-host type veth peer name sdr-node
  ip link set sdr-node netns "$netns"
  ip addr add "$host_ip/30" dev sdr-host
  ip link set sdr-host up
  in_ns ip link set lo up
  in_ns ip addr add "$node_ip/30" dev sdr-node
  in_ns ip link set sdr-node up
  in_ns ip route add default via "$host_ip"
  # The host reaches pods (tests, port-forwards) through the node.
  ip route add "$pod_cidr" via "$node_ip"
  in_ns sysctl -qw net.ipv4.ip_forward=1
  # Pod-to-Service traffic between two pods on the bridge must pass kube-proxy's rules.
  in_ns sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || log "bridge-nf-call-iptables not settable; kube-proxy masquerades all Service traffic instead"
}

write_configs() {
  mkdir -p "$work"/{containerd/root,containerd/state,containerd/opt,cni/net.d,cni/ipam,kubelet,pod-logs,logs,pids}
  local api; api=$(KUBECONFIG=$admin_kubeconfig kubectl get endpointslice -n default -l kubernetes.io/service-name=kubernetes \
    -o jsonpath='{.items[0].endpoints[0].addresses[0]}:{.items[0].ports[0].port}')
  [ -n "$api" ] || fail "cannot read the API server's advertised address (the kubernetes Service's EndpointSlice)"
  # The admin kubeconfig names 127.0.0.1, which inside the namespace is the node's own loopback.
  sed "s#server: https://.*#server: https://$api#" "$admin_kubeconfig" > "$work/kubeconfig"

  cat > "$work/containerd/config.toml" <<EOF
version = 2
root = "$work/containerd/root"
state = "$work/containerd/state"
[grpc]
  address = "$sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$work/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "sidereal.local/pause:1"
  # This machine's root lacks CAP_SYS_RESOURCE: runc may not lower oom_score_adj.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$runc_bin"
        Root = "$work/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$work/cni/net.d"
EOF
  cat > "$work/cni/net.d/10-sidereal.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "sidereal-node", "plugins": [
  {"type": "bridge", "bridge": "sdr0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
   "ipam": {"type": "host-local", "dataDir": "$work/cni/ipam",
            "ranges": [[{"subnet": "$pod_cidr"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}
]}
EOF
  # Pods with dnsPolicy Default get no upstream: this machine has no internet.
  : > "$work/resolv.conf"
  cat > "$work/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://$sock
# This machine: a cgroup v1 hierarchy with a v2 mount beside it, no systemd.
cgroupDriver: cgroupfs
failCgroupV1: false
cgroupsPerQOS: true
# Every pod's cgroups under one of the node's own (removed by node.sh down).
cgroupRoot: /sidereal-node
enforceNodeAllocatable: []
failSwapOn: false
podLogsDir: $work/pod-logs
resolvConf: $work/resolv.conf
clusterDNS: [$node_ip]
clusterDomain: cluster.local
# The API server reaches the kubelet (logs, exec) without a client certificate here.
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
# A shared test machine: never evict pods or collect images because its disk is busy.
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
EOF
  cat > "$work/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $work/kubeconfig}
hostnameOverride: $node
mode: iptables
clusterCIDR: $pod_cidr
bindAddress: $node_ip
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
# Host-wide conntrack settings are not the node's to change.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
  cat > "$work/Corefile" <<EOF
cluster.local:53 in-addr.arpa:53 {
    bind $node_ip
    errors
    kubernetes cluster.local in-addr.arpa {
        kubeconfig $work/kubeconfig
        pods insecure
    }
    cache 5
}
.:53 {
    bind $node_ip
    # No upstream: this machine has no internet. Answer at once instead of timing out.
    template ANY ANY {
        rcode NXDOMAIN
    }
}
EOF
}

import_images() {
  local dir=$1 tar
  for tar in "$dir"/*.tar; do
    ctr -a "$sock" -n k8s.io images import --all-platforms "$tar" >/dev/null || fail "ctr images import $tar failed"
  done
  log "images: $(ctr -a "$sock" -n k8s.io images ls -q | grep -v '^sha256:' | tr '\n' ' ')"
}

# The node's own cgroup in every v1 hierarchy (this machine: v1 with a v2 mount beside it),
# under which the kubelet puts every pod (cgroupRoot); `down` removes it.
cgroup_hierarchies() { find /sys/fs/cgroup -mindepth 1 -maxdepth 1 -type d ! -name unified; }
cgroup_up() {
  local h
  for h in $(cgroup_hierarchies); do
    mkdir -p "$h/sidereal-node"
    if [ -f "$h/cpuset.cpus" ]; then
      cat "$h/cpuset.cpus" > "$h/sidereal-node/cpuset.cpus"
      cat "$h/cpuset.mems" > "$h/sidereal-node/cpuset.mems"
    fi
  done
}
cgroup_down() {
  local h
  # Whatever still runs in the node's cgroup (a container whose shim went first) goes now.
  local procs="/sys/fs/cgroup/pids/sidereal-node"
  if [ -d "$procs" ]; then
    local deadline=$(( $(date +%s) + 10 ))
    while [ -n "$(find "$procs" -name cgroup.procs -exec cat {} + 2>/dev/null)" ] && [ "$(date +%s)" -lt "$deadline" ]; do
      find "$procs" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -9 2>/dev/null || true
      sleep 0.1
    done
  fi
  for h in $(cgroup_hierarchies); do
    # Deepest first; a cgroup dir is removed with rmdir once empty of processes.
    [ -d "$h/sidereal-node" ] && find "$h/sidereal-node" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
}

up() {
  local images=${1:?usage: node.sh up IMAGES_DIR}
  preflight
  down
  local bin; bin=$("$here/build-node.sh")
  local t0; t0=$(date +%s)
  write_configs
  # Paths outside the work folder that the kubelet (device plugins, pod resources) and the CNI
  # library (its result cache) use whatever they are told: removed by `down` when this made
  # them, else only this node's entries in them.
  for path in /var/lib/kubelet /var/lib/cni /run/containerd /etc/cni; do
    [ -e "$path" ] || echo "$path" >> "$work/made-outside"
  done
  # containerd puts each pod's network namespace in /run/netns (cni-...): `down` removes the
  # ones that were not there before.
  ls /run/netns 2>/dev/null > "$work/netns-before" || true
  network_up
  cgroup_up

  daemon containerd containerd --config "$work/containerd/config.toml"
  wait_for "containerd" 30 containerd ctr -a "$sock" version
  import_images "$images"

  daemon coredns "$bin/coredns" -conf "$work/Corefile"
  daemon kube-proxy "$bin/kube-proxy" --config "$work/kube-proxy.yaml"
  daemon kubelet "$bin/kubelet" --config "$work/kubelet.yaml" --kubeconfig "$work/kubeconfig" \
    --root-dir "$work/kubelet" --cert-dir "$work/kubelet/pki" \
    --hostname-override "$node" --node-ip "$node_ip" --node-labels sidereal.dev/real-node=true
  export KUBECONFIG=$admin_kubeconfig
  wait_for "node $node registered" 60 kubelet kubectl get node "$node"
  kubectl wait --for=condition=Ready "node/$node" --timeout=90s >&2 || {
    tail -n 40 "$work/logs/kubelet.log" >&2; fail "node $node not Ready"; }
  # No node IPAM runs (the bridge plugin's host-local range is the node's); say it on the Node
  # as a cluster's controller-manager would, for whoever reads it (kube-router does).
  kubectl patch node "$node" --type merge -p "{\"spec\":{\"podCIDR\":\"$pod_cidr\",\"podCIDRs\":[\"$pod_cidr\"]}}" >/dev/null
  # NetworkPolicies enforced by kube-router's policy controller alone (iptables and ipset in
  # the node's namespace; pod traffic across the bridge passes them by br_netfilter).
  daemon kube-router "$bin/kube-router" --kubeconfig "$work/kubeconfig" --hostname-override "$node" \
    --run-firewall=true --run-router=false --run-service-proxy=false --enable-cni=false \
    --service-cluster-ip-range 10.0.0.0/24 --metrics-port 0 --health-port 0
  wait_for "kube-router's policy chains" 60 kube-router in_ns iptables -n -L KUBE-ROUTER-FORWARD
  log "$node Ready in $(( $(date +%s) - t0 ))s (containerd $(containerd --version | awk '{print $3}'), runc $("$runc_bin" --version | awk 'NR==1 {print $3}'), kubelet $K8S_VERSION)"
}

down() {
  if [ -f "$admin_kubeconfig" ]; then
    KUBECONFIG=$admin_kubeconfig kubectl delete node "$node" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  fi
  # The kubelet first, so it starts nothing more; then every container containerd runs.
  local name pid
  for name in kubelet kube-proxy kube-router coredns; do
    pid=$(cat "$work/pids/$name" 2>/dev/null || true)
    [ -n "$pid" ] && kill -- -"$pid" 2>/dev/null || true
  done
  local containers=""
  if [ -S "$sock" ]; then
    local ids; ids=$(ctr -a "$sock" -n k8s.io tasks ls -q 2>/dev/null || true)
    for id in $ids; do ctr -a "$sock" -n k8s.io tasks kill -s KILL "$id" >/dev/null 2>&1 || true; done
    containers=$(ctr -a "$sock" -n k8s.io containers ls -q 2>/dev/null || true)
  fi
  pid=$(cat "$work/pids/containerd" 2>/dev/null || true)
  [ -n "$pid" ] && kill -- -"$pid" 2>/dev/null || true
  # containerd's shims outlive it by design; they hold the node's containers.
  pkill -f "containerd-shim-runc-v2 -namespace k8s.io -address $sock" 2>/dev/null || true
  local deadline=$(( $(date +%s) + 20 ))
  while pgrep -f "$work/" >/dev/null 2>&1 && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.2; done
  pkill -9 -f "$work/" 2>/dev/null || true
  # The CNI result cache keeps one file per pod sandbox and interface.
  for id in $containers; do rm -f /var/lib/cni/results/*-"$id"-*; done
  cgroup_down
  if [ -f "$work/netns-before" ]; then
    local ns_name
    for ns_name in $(ls /run/netns 2>/dev/null | grep '^cni-' || true); do
      grep -qx "$ns_name" "$work/netns-before" || ip netns delete "$ns_name" 2>/dev/null || true
    done
  fi
  ip netns delete "$netns" 2>/dev/null || true
  ip link delete sdr-host 2>/dev/null || true
  # Container root file systems are mounts under the work folder.
  if [ -d "$work" ]; then
    { grep " $work/" /proc/mounts || true; } | awk '{print $2}' | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    local made
    while read -r made; do rm -rf "$made"; done < <(cat "$work/made-outside" 2>/dev/null || true)
    rm -rf "$work"
  fi
}

case "${1:-}" in
  up) shift; up "$@" ;;
  down) down ;;
  ctr) shift; ctr -a "$sock" -n k8s.io "$@" ;;
  status) KUBECONFIG=$admin_kubeconfig kubectl get node "$node" -o wide ;;
  *) echo "usage: $0 up IMAGES_DIR | down | status" >&2; exit 2 ;;
esac
