// Package firewall defines the gate that sesame keeps in the kernel and the grants that open it.
//
// # Backends
//
// Four implementations of Backend live in subpackages:
//
//   - nft: nftables over netlink (the default). One table, inet sesame, with a base chain "gate"
//     on the input hook at priority -10 and timeout sets grants4/grants6 keyed by
//     source . protocol . port. Apply replaces the table in one atomic batch and carries every
//     live grant over with the time it has left; grants expire in the kernel with millisecond
//     resolution.
//   - ipt: iptables/ip6tables plus ipsets sesame4/sesame6 (hash:ip,port with timeout), for hosts
//     without nftables. A chain SESAME is jumped to from the top of INPUT; grants are ipset
//     entries added over netlink and expire in the kernel with one-second resolution.
//   - none: changes nothing; it refuses to gate ports or grant, so a configuration that needs
//     gating fails loudly.
//   - awssg: AWS security groups; a grant is a tagged ingress rule that sesame revokes itself
//     (no kernel timeouts), see docs/CLOUD.md.
//
// The subpackage fwtest is the conformance suite both kernel backends run in network namespaces;
// its RunState is the same sequence without packets, which awssg runs against a double.
//
// Warning: sesame's gate only ever removes access. An accept in sesame's nft table cannot
// override a drop in another table or base chain, so the host firewall must itself allow the
// protected service ports (sesame then drops them for everyone without a grant), or accept the
// connections sesame admitted: both backends set conntrack mark bit ConnMark on them. The ipt
// backend accepts those connections itself in its chain, ahead of the rest of INPUT. Subpackage
// hostcheck finds host rules that would drop them. See docs/FIREWALL.md.
package firewall
