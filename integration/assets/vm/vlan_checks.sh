# VLAN scenarios of the bridge plugin, run in the test VM once per
# implementation (/cni/ours and /cni/ref each hold bridge + host-local), each
# scenario in fresh namespaces: `node` (the plugin's host, where br0 lives)
# and one per pod. Only observations are printed (FACT <key> <value>, key
# <scenario>/<impl>/<what>); integration/tests/bridge_vlan_vm.rs judges them.

BR=br0

# busybox sh runs its own applets before searching PATH: iproute2 by path.
ip() { /usr/sbin/ip "$@"; }
bridge() { /usr/sbin/bridge "$@"; }

fact() { echo "FACT $1 $2"; }
oneline() { tr -d '\n' < "$1"; }

# cni IMPL COMMAND POD CONF: the bridge plugin run in `node`, as a runtime
# runs it; stdout in /tmp/out, stderr in /tmp/err.
cni() {
  ip netns exec node env -i PATH="$PATH" CNI_COMMAND="$2" CNI_CONTAINERID="ctr-$3" \
    CNI_NETNS="/run/netns/$3" CNI_IFNAME=eth0 CNI_PATH="/cni/$1" \
    "/cni/$1/bridge" < "$4" > /tmp/out 2> /tmp/err
}

# conf FILE NAME MEMBERS: a 1.0.0 config on br0 with more JSON members.
conf() {
  printf '{"cniVersion":"1.0.0","name":"%s","type":"bridge","bridge":"%s"%s}\n' \
    "$2" "$BR" "$3" > "$1"
}

# ipam SUBNET FIRST LAST: host-local members.
ipam() {
  printf ',"ipam":{"type":"host-local","dataDir":"/tmp/ipam","ranges":[[{"subnet":"%s","rangeStart":"%s","rangeEnd":"%s"}]]}' \
    "$1" "$2" "$3"
}

# fresh POD...: new `node` and pod namespaces, empty IPAM store.
fresh() {
  for n in $(ip netns list | cut -d' ' -f1); do ip netns del "$n"; done
  rm -rf /tmp/ipam
  ip netns add node
  ip -n node link set lo up
  for p in "$@"; do
    ip netns add "$p"
    ip -n "$p" link set lo up
  done
}

# add S I POD CONF / del S I POD CONF
add() {
  cni "$2" ADD "$3" "$4"
  rc=$?
  fact "$1/$2/add-$3" "$rc"
  oneline /tmp/out > "/tmp/res-$3"
  fact "$1/$2/result-$3" "$(cat "/tmp/res-$3")"
  [ "$rc" = 0 ] || fact "$1/$2/stderr-$3" "$(oneline /tmp/err)"
}
del() {
  cni "$2" DEL "$3" "$4"
  rc=$?
  fact "$1/$2/del-$3" "$rc $(oneline /tmp/out)"
}

# chk S I POD CONF: CHECK with the pod's ADD result as prevResult.
chk() {
  { tr -d '\n' < "$4" | sed 's/}$//'; printf ',"prevResult":%s}\n' "$(cat "/tmp/res-$3")"; } > /tmp/chk.json
  cni "$2" CHECK "$3" /tmp/chk.json
  rc=$?
  fact "$1/$2/check-$3" "$rc $(oneline /tmp/out)"
}

# addr POD [DEV]: the pod's first IPv4 address.
addr() {
  ip -n "$1" -4 -o addr show dev "${2:-eth0}" 2>/dev/null |
    awk '{ split($4, a, "/"); print a[1]; exit }'
}

# reach S I FROM ADDR NAME: one ping, its exit code as S/I/ping-NAME.
reach() {
  ip netns exec "$3" ping -c 1 -W 2 "$4" > /dev/null 2>&1
  fact "$1/$2/ping-$5" "$? $4"
}

# state S I: links and VLAN table of the node while pods are attached.
state() {
  fact "$1/$2/links" "$(ip -n node -d -j link show)"
  fact "$1/$2/vlans" "$(ip netns exec node bridge -j vlan show)"
}

# after S I POD...: what is left once every pod is deleted.
after() {
  s=$1
  i=$2
  shift 2
  fact "$s/$i/links-after" "$(ip -n node -d -j link show)"
  fact "$s/$i/vlans-after" "$(ip netns exec node bridge -j vlan show)"
  for p in "$@"; do
    fact "$s/$i/podlinks-after-$p" "$(ip -n "$p" -o link show | awk -F': ' '{ printf "%s ", $2 }')"
  done
  fact "$s/$i/store-after" "$(find /tmp/ipam -type f 2>/dev/null | tr '\n' ' ')"
}

# Access port: vlan 100 (pa, pb) and vlan 200 (pc) in one subnet.
access() {
  i=$1
  fresh pa pb pc
  conf /tmp/a.json acc ",\"vlan\":100$(ipam 10.10.0.0/24 10.10.0.10 10.10.0.19)"
  conf /tmp/c.json acc-c ",\"vlan\":200$(ipam 10.10.0.0/24 10.10.0.20 10.10.0.29)"
  add access "$i" pa /tmp/a.json
  add access "$i" pb /tmp/a.json
  add access "$i" pc /tmp/c.json
  reach access "$i" pa "$(addr pb)" same-vlan
  reach access "$i" pa "$(addr pc)" other-vlan
  chk access "$i" pa /tmp/a.json
  state access "$i"
  del access "$i" pa /tmp/a.json
  del access "$i" pb /tmp/a.json
  del access "$i" pc /tmp/c.json
  after access "$i" pa pb pc
}

# preserveDefaultVlan false: vlan 100 without VLAN 1 (pa, pb); pu untagged.
nodefault() {
  i=$1
  fresh pa pb pu
  conf /tmp/n.json nodef ",\"vlan\":100,\"preserveDefaultVlan\":false$(ipam 10.10.0.0/24 10.10.0.10 10.10.0.19)"
  conf /tmp/u.json nodef-u "$(ipam 10.10.0.0/24 10.10.0.20 10.10.0.29)"
  add nodefault "$i" pa /tmp/n.json
  add nodefault "$i" pb /tmp/n.json
  add nodefault "$i" pu /tmp/u.json
  reach nodefault "$i" pa "$(addr pb)" same-vlan
  reach nodefault "$i" pa "$(addr pu)" untagged
  chk nodefault "$i" pa /tmp/n.json
  state nodefault "$i"
  del nodefault "$i" pa /tmp/n.json
  del nodefault "$i" pb /tmp/n.json
  del nodefault "$i" pu /tmp/u.json
  after nodefault "$i" pa pb pu
}

# Trunk port pt (L2: 101 and 200-210 tagged) with VLAN interfaces in the pod;
# access pods on 101 (px), 205 (pz) and 211 (py, outside the trunk).
trunk() {
  i=$1
  fresh pt px pz py
  conf /tmp/t.json trunk ',"vlanTrunk":[{"id":101},{"minID":200,"maxID":210}]'
  conf /tmp/x.json trunk-x ",\"vlan\":101$(ipam 10.11.1.0/24 10.11.1.10 10.11.1.19)"
  conf /tmp/z.json trunk-z ",\"vlan\":205$(ipam 10.11.205.0/24 10.11.205.10 10.11.205.19)"
  conf /tmp/y.json trunk-y ",\"vlan\":211$(ipam 10.11.211.0/24 10.11.211.10 10.11.211.19)"
  add trunk "$i" pt /tmp/t.json
  add trunk "$i" px /tmp/x.json
  add trunk "$i" pz /tmp/z.json
  add trunk "$i" py /tmp/y.json
  for v in 1:101 205:205 211:211; do
    net=${v%%:*}
    vid=${v##*:}
    ip -n pt link add link eth0 name "eth0.$vid" type vlan id "$vid"
    ip -n pt addr add "10.11.$net.1/24" dev "eth0.$vid"
    ip -n pt link set "eth0.$vid" up
  done
  reach trunk "$i" pt "$(addr px)" vlan-101
  reach trunk "$i" pt "$(addr pz)" vlan-205
  reach trunk "$i" pt "$(addr py)" vlan-211
  state trunk "$i"
  del trunk "$i" pt /tmp/t.json
  del trunk "$i" px /tmp/x.json
  del trunk "$i" pz /tmp/z.json
  del trunk "$i" py /tmp/y.json
  after trunk "$i" pt px pz py
}

# vlan and vlanTrunk together (ours: untagged 100 plus tagged 101 on ph;
# upstream refuses the combination, the reference ignores vlanTrunk).
hybrid() {
  i=$1
  fresh ph px py
  conf /tmp/h.json hybrid ",\"vlan\":100,\"vlanTrunk\":[{\"id\":101}]$(ipam 10.14.0.0/24 10.14.0.1 10.14.0.9)"
  conf /tmp/x.json hybrid-x ",\"vlan\":100$(ipam 10.14.0.0/24 10.14.0.10 10.14.0.19)"
  conf /tmp/y.json hybrid-y ",\"vlan\":101$(ipam 10.14.1.0/24 10.14.1.10 10.14.1.19)"
  add hybrid "$i" ph /tmp/h.json
  add hybrid "$i" px /tmp/x.json
  add hybrid "$i" py /tmp/y.json
  ip -n ph link add link eth0 name eth0.101 type vlan id 101
  ip -n ph addr add 10.14.1.1/24 dev eth0.101
  ip -n ph link set eth0.101 up
  reach hybrid "$i" ph "$(addr px)" untagged-100
  reach hybrid "$i" ph "$(addr py)" tagged-101
  state hybrid "$i"
  del hybrid "$i" ph /tmp/h.json
  del hybrid "$i" px /tmp/x.json
  del hybrid "$i" py /tmp/y.json
  after hybrid "$i" ph px py
}

# vlan + isGateway: the gateway on br0.100 (pa, pb); ph on vlan 200, same
# subnet, no gateway.
gateway() {
  i=$1
  fresh pa pb ph
  conf /tmp/g.json gw ",\"vlan\":100,\"isGateway\":true$(ipam 10.12.0.0/24 10.12.0.10 10.12.0.19)"
  conf /tmp/h.json gw-h ",\"vlan\":200$(ipam 10.12.0.0/24 10.12.0.20 10.12.0.29)"
  add gateway "$i" pa /tmp/g.json
  add gateway "$i" pb /tmp/g.json
  add gateway "$i" ph /tmp/h.json
  reach gateway "$i" pa 10.12.0.1 gateway
  reach gateway "$i" pa "$(addr pb)" same-vlan
  reach gateway "$i" ph 10.12.0.1 gateway-other-vlan
  reach gateway "$i" pa "$(addr ph)" other-vlan
  fact "gateway/$i/gw-addrs" "$(ip -n node -j addr show dev "$BR.100")"
  chk gateway "$i" pa /tmp/g.json
  state gateway "$i"
  del gateway "$i" pa /tmp/g.json
  del gateway "$i" pb /tmp/g.json
  del gateway "$i" ph /tmp/h.json
  after gateway "$i" pa pb ph
}

# A vlan also listed in vlanTrunk.
refuse() {
  i=$1
  fresh pa
  conf /tmp/r.json refuse ",\"vlan\":100,\"vlanTrunk\":[{\"id\":100}]$(ipam 10.13.0.0/24 10.13.0.10 10.13.0.19)"
  add refuse "$i" pa /tmp/r.json
  fact "refuse/$i/links" "$(ip -n node -d -j link show)"
  del refuse "$i" pa /tmp/r.json
  after refuse "$i" pa
}

fact boot/iproute2 "$(ip -V)"
ip link add vprobe type bridge vlan_filtering 1
fact boot/vlan_filtering "$(cat /sys/class/net/vprobe/bridge/vlan_filtering 2>&1)"
ip link del vprobe
for impl in ours ref; do
  for scen in access nodefault trunk hybrid gateway refuse; do
    start=$(cut -d' ' -f1 /proc/uptime)
    "$scen" "$impl"
    fact "time/$scen/$impl" "$start $(cut -d' ' -f1 /proc/uptime)"
  done
done
fresh
