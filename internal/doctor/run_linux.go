package doctor

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/google/nftables"

	"github.com/sesame-knock/sesame/internal/config"
	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/firewall/hostcheck"
	"github.com/sesame-knock/sesame/internal/firewall/ipt"
	"github.com/sesame-knock/sesame/internal/firewall/nft"
	"github.com/sesame-knock/sesame/internal/netport"
	"github.com/sesame-knock/sesame/internal/server"
)

// firstProbePort is the first source port of the probes (each probe takes the next one).
const firstProbePort = 40000

// grantFor is the lifetime of the synthetic grants in the scratch namespace.
const grantFor = 10 * time.Minute

// Run diagnoses the host's firewall for opts.Config: the listeners of protected ports, the
// doors' iptables commands, and (with nft(8) installed) a replay of the live ruleset with
// sesame's gate in a scratch namespace, probed with traced test packets.
func Run(ctx context.Context, opts Options) (*Report, error) {
	cfg := opts.Config
	if cfg == nil {
		return nil, fmt.Errorf("doctor: no configuration")
	}
	ctx, cancel := context.WithTimeout(ctx, opts.timeout())
	defer cancel()
	var protected []netport.Port
	if cfg.Server.Firewall != config.FirewallNone {
		for _, p := range server.Gate(cfg).Protected {
			if firewall.CheckPort(p) == nil && !slices.Contains(protected, p) {
				protected = append(protected, p)
			}
		}
	}
	var knocks []netport.Port
	for _, d := range cfg.Doors {
		for _, k := range d.Sequence {
			if (k.Proto == netport.TCP || k.Proto == netport.UDP) && !slices.Contains(knocks, k) && !slices.Contains(protected, k) {
				knocks = append(knocks, k)
			}
		}
	}
	h := readHost(ctx, cfg, protected)
	r := &Report{}
	for _, p := range protected {
		st, text, fix := listenCheck(p, h.listeners, h.addrs, cfg.Server.Interfaces)
		r.add(st, p.String()+" service", text, fix)
	}
	commandChecks(r, cfg, h)
	if len(protected)+len(knocks) > 0 {
		simulate(ctx, r, cfg, h, protected, knocks, opts.probeTimeout())
	}
	if ctx.Err() != nil {
		r.add(Fail, "doctor", "stopped: "+ctx.Err().Error(), "")
	}
	return r, nil
}

// commandChecks warns about door commands that append an ACCEPT behind a drop of its port.
func commandChecks(r *Report, cfg *config.Config, h *host) {
	for _, d := range cfg.Doors {
		seen := map[string]bool{}
		for _, cmd := range []string{d.StartCommand, d.StartCommand6} {
			for _, c := range parseIptCommands(cmd) {
				if c.target != "ACCEPT" || seen[c.text] {
					continue
				}
				seen[c.text] = true
				save, fam := h.nft4, "ip"
				if strings.HasPrefix(c.binary, "ip6tables") {
					save, fam = h.nft6, "ip6"
				}
				if strings.Contains(c.binary, "legacy") {
					save = map[string]saveTables{"ip": h.legacy4, "ip6": h.legacy6}[fam]
				}
				where := fam + " " + c.table + " " + c.chain
				subject := fmt.Sprintf("door %q command", d.Name)
				if w := appendAfterDrop(c, save.rules[c.table+" "+c.chain], where); w != "" {
					r.add(Warn, subject, w, "insert the rule instead of appending it: "+strings.Replace(c.text, "-A "+c.chain, "-I "+c.chain+" 1", 1))
					continue
				}
				r.add(OK, subject, fmt.Sprintf("%q: no earlier rule of %s drops %s", c.text, where, c.port), "")
			}
		}
	}
}

// sim is one replay of the ruleset in a scratch namespace.
type sim struct {
	r      *Report
	h      *host
	kind   firewall.Kind
	fw     firewall.Backend
	p      *prober
	hooks  map[chainName]string
	pos    map[chainName]map[uint64]int
	legacy bool
}

func simulate(ctx context.Context, r *Report, cfg *config.Config, h *host, protected, knocks []netport.Port, timeout time.Duration) {
	if _, err := exec.LookPath("nft"); err != nil {
		r.add(Warn, "ruleset", "nft(8) is not installed: the live ruleset was not replayed", "install nftables")
		return
	}
	if h.nftErr != nil {
		r.add(Fail, "ruleset", "cannot read the live ruleset: "+h.nftErr.Error(), "run as root")
		return
	}
	s, err := newScratch(h.ifname, h.dst, h.ifnames, h.forward)
	if err != nil {
		r.add(Fail, "ruleset", "cannot build the scratch namespace: "+err.Error(), "run as root")
		return
	}
	defer s.close()
	x := &sim{r: r, h: h, kind: cfg.Server.Firewall}
	if len(protected) == 0 {
		x.kind = config.FirewallNone
	}
	if x.kind == config.FirewallIptables { // the ipsets must exist before rules naming them are copied
		b, err := ipt.New(ipt.Options{NetNS: int(s.srv)})
		if err == nil {
			err = b.Apply(ctx, firewall.Gate{Protected: protected})
			x.fw = b
		}
		if err != nil {
			r.add(Fail, "ruleset", "cannot build sesame's iptables gate in the scratch namespace: "+err.Error(), "")
			return
		}
	}
	if !x.copyRuleset(ctx, s) {
		return
	}
	switch x.kind {
	case config.FirewallNftables:
		b, err := nft.New(nft.Options{NetNS: int(s.srv)})
		if err != nil {
			r.add(Fail, "ruleset", "cannot build sesame's nftables gate in the scratch namespace: "+err.Error(), "")
			return
		}
		x.fw = b
	}
	if x.fw != nil {
		defer x.fw.Close(context.Background(), false)
		if err := x.fw.Apply(ctx, firewall.Gate{Protected: protected}); err != nil {
			r.add(Fail, "ruleset", "cannot apply sesame's gate in the scratch namespace: "+err.Error(), "")
			return
		}
	}
	if _, err := run(ctx, s.srv, traceRuleset, "nft", "-f", "-"); err != nil {
		r.add(Fail, "ruleset", "cannot add the trace table: "+err.Error(), "")
		return
	}
	inNS(s.srv, func() error { // the kernel's answers to probes must not be rate limited
		return os.WriteFile("/proc/sys/net/ipv4/icmp_ratelimit", []byte("0\n"), 0o644)
	})
	mon, err := startMonitor(ctx, s.srv)
	if err != nil {
		r.add(Fail, "ruleset", err.Error(), "")
		return
	}
	defer mon.stop()
	x.p = &prober{s: s, mon: mon, timeout: timeout, sport: firstProbePort}
	if err := x.p.sync(ctx); err != nil {
		r.add(Fail, "ruleset", err.Error(), "")
		return
	}
	if err := x.readChains(s); err != nil {
		r.add(Fail, "ruleset", err.Error(), "")
		return
	}
	for _, port := range protected {
		if ctx.Err() != nil {
			return
		}
		x.probeProtected(ctx, port)
	}
	x.probeKnocks(ctx, knocks, protected, cfg)
}

// copyRuleset loads the host's ruleset into the scratch namespace: iptables-nft's tables with
// iptables-nft-restore (so that iptables can still edit them there), every other nftables
// table except sesame's own with nft -f, and iptables-legacy's tables with
// iptables-legacy-restore. It reports what it copied and what it could not.
func (x *sim) copyRuleset(ctx context.Context, s *scratch) bool {
	var copied, failed []string
	for _, t := range []struct {
		save saveTables
		cmd  string
		fam  string
	}{{x.h.nft4, "iptables-nft-restore", "ip"}, {x.h.nft6, "ip6tables-nft-restore", "ip6"},
		{x.h.legacy4, "iptables-legacy-restore", "ip legacy"}, {x.h.legacy6, "ip6tables-legacy-restore", "ip6 legacy"}} {
		if len(t.save.names) == 0 {
			continue
		}
		if _, err := run(ctx, s.srv, t.save.text, t.cmd); err != nil {
			failed = append(failed, t.fam+" "+strings.Join(t.save.names, ",")+": "+err.Error())
			continue
		}
		if strings.Contains(t.fam, "legacy") && hasRules(t.save) {
			x.legacy = true
		}
		copied = append(copied, t.fam+" "+strings.Join(t.save.names, ","))
	}
	var tables []nftTable
	for _, t := range splitTables(x.h.nftText) {
		switch {
		case t.family == "inet" && (t.name == nft.DefaultTable || t.name == traceTable):
		case t.family == "ip" && x.h.nft4.has(t.name), t.family == "ip6" && x.h.nft6.has(t.name):
		default:
			tables = append(tables, t)
		}
	}
	var all strings.Builder
	for _, t := range tables {
		all.WriteString(t.text)
	}
	if _, err := run(ctx, s.srv, all.String(), "nft", "-f", "-"); err == nil {
		for _, t := range tables {
			copied = append(copied, t.family+" "+t.name)
		}
	} else {
		for _, t := range tables { // one by one, to name the ones that do not load
			if _, err := run(ctx, s.srv, t.text, "nft", "-f", "-"); err != nil {
				failed = append(failed, t.family+" "+t.name+": "+err.Error())
				continue
			}
			copied = append(copied, t.family+" "+t.name)
		}
	}
	gate := "no gate (firewall " + string(x.kind) + ")"
	if x.kind != config.FirewallNone {
		gate = "sesame's " + string(x.kind) + " gate"
	}
	what := "no tables"
	if len(copied) > 0 {
		what = "tables " + strings.Join(copied, "; ")
	}
	x.r.add(OK, "ruleset", fmt.Sprintf("replayed %s with %s in a scratch namespace (clients come in on %s, to %s)", what, gate, s.ifname, s.dst), "")
	for _, f := range failed {
		x.r.add(Warn, "ruleset", "not replayed, its rules are missing from every check below: "+f, "")
	}
	if x.legacy {
		x.r.add(Warn, "ruleset", "iptables-legacy rules are replayed but nftrace cannot see them: a packet they drop shows as \"no nftables rule dropped it\"",
			"move the rules to iptables-nft or nftables")
	}
	return true
}

func hasRules(st saveTables) bool {
	for _, rs := range st.rules {
		if len(rs) > 0 {
			return true
		}
	}
	for _, p := range st.policy {
		if p != "ACCEPT" {
			return true
		}
	}
	return false
}

// readChains learns the hook of every base chain and the position of every rule.
func (x *sim) readChains(s *scratch) error {
	conn, err := nftables.New(nftables.WithNetNSFd(int(s.srv)))
	if err != nil {
		return fmt.Errorf("doctor: nftables in scratch namespace: %w", err)
	}
	chains, err := conn.ListChains()
	if err != nil {
		return fmt.Errorf("doctor: list chains: %w", err)
	}
	x.hooks, x.pos = map[chainName]string{}, map[chainName]map[uint64]int{}
	for _, c := range chains {
		if c.Table == nil {
			continue
		}
		n := chainName{familyName(c.Table.Family), c.Table.Name, c.Name}
		if c.Hooknum != nil {
			x.hooks[n] = hookName(*c.Hooknum)
		}
		rules, err := conn.GetRules(c.Table, c)
		if err != nil {
			continue
		}
		x.pos[n] = map[uint64]int{}
		for i, r := range rules {
			x.pos[n][r.Handle] = i + 1
		}
	}
	return nil
}

func familyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyARP:
		return "arp"
	case nftables.TableFamilyBridge:
		return "bridge"
	case nftables.TableFamilyNetdev:
		return "netdev"
	}
	return hostcheck.FamilyName(f)
}

func hookName(h nftables.ChainHook) string {
	switch h {
	case *nftables.ChainHookPrerouting:
		return "prerouting"
	case *nftables.ChainHookInput:
		return "input"
	case *nftables.ChainHookForward:
		return "forward"
	case *nftables.ChainHookOutput:
		return "output"
	case *nftables.ChainHookPostrouting:
		return "postrouting"
	}
	return fmt.Sprintf("hook-%d", h)
}

// name is a rule or policy as the report names it: "ip filter INPUT rule 3: tcp dport 22 drop".
func (x *sim) name(e *event) string {
	c := chainName{e.family, e.table, e.chain}
	if e.kind == "policy" {
		return c.String() + " policy " + e.verdict
	}
	if n := x.pos[c][e.handle]; n > 0 {
		return fmt.Sprintf("%s rule %d: %s", c, n, e.rule)
	}
	return fmt.Sprintf("%s rule (handle %d): %s", c, e.handle, e.rule)
}

// accepted lists the input-hook chains that let the packet through.
func (x *sim) accepted(t trail) string {
	var s []string
	for i := range t.accepts {
		s = append(s, x.name(&t.accepts[i]))
	}
	if len(s) == 0 {
		return ""
	}
	return " (accepted by " + strings.Join(s, "; ") + ")"
}

// blocked says why a probe got no service: forwarded, dropped, rejected or unknown.
func (x *sim) blocked(t trail) string {
	switch {
	case t.dnat != nil && (t.forward || t.drop == nil || x.hooks[t.drop.base] != "input"):
		s := "forwarded: " + x.name(t.dnat) + " rewrites the destination, so the packet takes the forward path, not the input hook where sesame's gate sits: the gate does not cover this port"
		if t.drop != nil {
			s += " (in this replay it is then dropped by " + x.name(t.drop) + ")"
		}
		return s
	case t.drop != nil && t.rejects():
		return "rejected by " + x.name(t.drop)
	case t.drop != nil:
		return "dropped by " + x.name(t.drop)
	case !t.seen:
		return "no trace of the packet (nftrace saw nothing)"
	}
	s := "no answer, though no nftables rule dropped it"
	if x.legacy {
		s += " (an iptables-legacy rule may have)"
	}
	return s
}

const dnatFix = "sesame's gate filters the input hook, and forwarded (DNAT) traffic never passes it: publish the service on 127.0.0.1 only (docker: -p 127.0.0.1:PORT:PORT) and reach it through a local proxy or SSH, or filter the forward path yourself (docker: the DOCKER-USER chain)"

// probeProtected runs the three probes of one protected port: a granted client's new
// connection, its later packets after the grant ended, and an ungranted client's connection.
func (x *sim) probeProtected(ctx context.Context, port netport.Port) {
	p := x.p
	sv, err := p.serve(port)
	if err != nil {
		x.r.add(Fail, port.String(), err.Error(), "")
		return
	}
	defer sv.close()
	grant := firewall.Grant{Src: probeGranted, Port: port, Timeout: grantFor}
	if err := x.fw.Grant(ctx, grant); err != nil {
		x.r.add(Fail, port.String(), "cannot add the test grant: "+err.Error(), "")
		return
	}
	subject := port.String() + " granted client"
	m0, sport := p.mon.mark(), p.nextPort()
	f, _, err := p.open(port, probeGranted, sport)
	p.sync(ctx)
	t := follow(p.mon.since(m0), x.hooks, probeGranted, sport, true)
	if err != nil {
		fix := x.fix(port, t)
		x.r.add(Fail, subject, x.blocked(t), fix)
		x.r.add(Warn, subject+", later packets", "not tested: no connection was opened", "")
	} else {
		x.r.add(OK, subject, "reaches the service"+x.accepted(t), "")
		x.fw.Revoke(ctx, grant)
		m1 := p.mon.mark()
		err := f.talk("after the grant", 2*p.timeout)
		f.close()
		p.sync(ctx)
		t := follow(p.mon.since(m1), x.hooks, probeGranted, sport, false)
		if err != nil {
			x.r.add(Fail, subject+", later packets", "a connection opened during the grant stops after it: "+x.blocked(t), x.fix(port, t))
		} else {
			x.r.add(OK, subject+", later packets", "a connection opened during the grant keeps working after it"+x.accepted(t), "")
		}
	}
	x.fw.Revoke(ctx, grant)

	subject = port.String() + " ungranted client"
	m0, sport = p.mon.mark(), p.nextPort()
	f, _, err = p.open(port, probeUngranted, sport)
	p.sync(ctx)
	t = follow(p.mon.since(m0), x.hooks, probeUngranted, sport, true)
	switch {
	case err == nil:
		f.close()
		x.r.add(Fail, subject, "reaches the service"+x.accepted(t), "an accept for this port runs before sesame's gate drops it: remove it, or (iptables) move it below INPUT's jump to "+ipt.DefaultChain)
	case t.dnat != nil:
		x.r.add(Fail, subject, "not refused by sesame: "+x.blocked(t), dnatFix)
	default:
		x.r.add(OK, subject, "refused: "+strings.TrimPrefix(x.blocked(t), "no answer, "), "")
	}
}

// fix is the hint for a granted packet that does not get in: hostcheck's text for the chain
// that dropped it when it has one.
func (x *sim) fix(port netport.Port, t trail) string {
	if t.dnat != nil {
		return dnatFix
	}
	if t.drop == nil {
		return ""
	}
	for _, f := range x.h.findings {
		if f.Port == port && (chainName{hostcheck.FamilyName(f.Chain.Family), f.Chain.Table, f.Chain.Chain}) == t.drop.base {
			return f.Fix()
		}
	}
	return fmt.Sprintf("accept %s dport %d in %s (sesame's gate still drops it for every source without a grant), or accept the connections sesame admitted: ct mark and %#x == %#x accept",
		port.Proto, port.Num, t.drop.base, firewall.ConnMark, firewall.ConnMark)
}

// closedPortFirst is where the search for a closed reference port starts.
const closedPortFirst = 47001

// probeKnocks compares how the host answers on each knock port with how it answers on a
// closed port that is neither a knock nor protected: a difference shows a scanner where the
// knock ports are. A service listening on a knock port answers every scan.
func (x *sim) probeKnocks(ctx context.Context, knocks, protected []netport.Port, cfg *config.Config) {
	used := slices.Concat(knocks, protected)
	for _, l := range x.h.listeners {
		used = append(used, l.port)
	}
	if cfg.SPA != nil {
		used = append(used, netport.Port{Proto: netport.UDP, Num: cfg.SPA.Port})
	}
	for _, proto := range []netport.Proto{netport.TCP, netport.UDP} {
		var mine []netport.Port
		for _, k := range knocks {
			if k.Proto == proto {
				mine = append(mine, k)
			}
		}
		if len(mine) == 0 || ctx.Err() != nil {
			continue
		}
		ref := netport.Port{Proto: proto, Num: closedPortFirst}
		for slices.Contains(used, ref) {
			ref.Num++
		}
		refRes, refText := x.probeClosed(ctx, ref)
		for _, k := range mine {
			if ctx.Err() != nil {
				return
			}
			subject := "knock " + k.String()
			for _, l := range x.h.listeners {
				if l.port == k {
					x.r.add(Warn, subject, "a service listens on it ("+l.addr.String()+"): it answers every scan of the port, and a knock packet reaches it",
						"move the knock sequence to ports nothing listens on")
					break
				}
			}
			res, text := x.probeClosed(ctx, k)
			if res == refRes {
				x.r.add(OK, subject, fmt.Sprintf("%s, like the closed port %s", text, ref), "")
				continue
			}
			x.r.add(Warn, subject, fmt.Sprintf("%s, but the closed port %s %s: a scan tells the knock ports apart", text, ref, refText),
				"treat knock ports like every other closed port: no accept, reject or drop of their own")
		}
	}
}

// probeClosed sends one ungranted packet to a port without a service and says what came back.
func (x *sim) probeClosed(ctx context.Context, port netport.Port) (result, string) {
	p := x.p
	m0, sport := p.mon.mark(), p.nextPort()
	f, res, _ := p.open(port, probeUngranted, sport)
	if f != nil {
		f.close()
	}
	p.sync(ctx)
	t := follow(p.mon.since(m0), x.hooks, probeUngranted, sport, true)
	switch {
	case res == silent:
		return silent, "is silent (" + strings.TrimPrefix(x.blocked(t), "no answer, ") + ")"
	case t.rejects():
		return answered, "answers: " + x.blocked(t)
	case res == open:
		return open, "answers: a connection opens" + x.accepted(t)
	}
	what := "a TCP reset"
	if port.Proto == netport.UDP {
		what = "ICMP port unreachable"
	}
	return answered, "answers with " + what + " (no service)" + x.accepted(t)
}
