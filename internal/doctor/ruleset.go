package doctor

import (
	"strings"
)

// nftTable is one top-level table block of `nft list ruleset`.
type nftTable struct {
	family, name string
	text         string
}

// splitTables cuts an `nft list ruleset` listing into its table blocks; comment lines outside
// tables are dropped.
func splitTables(listing string) []nftTable {
	var out []nftTable
	var cur *nftTable
	var b strings.Builder
	for _, line := range strings.SplitAfter(listing, "\n") {
		if cur == nil {
			// nft lists every table as "table FAMILY NAME {" ... "}".
			f := strings.Fields(line)
			if len(f) == 4 && f[0] == "table" && f[3] == "{" {
				cur = &nftTable{family: f[1], name: f[2]}
				b.Reset()
				b.WriteString(line)
			}
			continue
		}
		b.WriteString(line)
		if strings.TrimRight(line, "\n") == "}" {
			cur.text = b.String()
			out = append(out, *cur)
			cur = nil
		}
	}
	return out
}

// saveTables reads `iptables-save` output: the names of the tables it dumped whole (a table it
// calls incompatible, or whose base chains it cannot all show, is left out) and the text.
type saveTables struct {
	names []string
	text  string
	// rules maps "table chain" to the chain's rules, as iptables-save prints them ("-A INPUT ...").
	rules map[string][]string
	// policy maps "table chain" to a base chain's policy (ACCEPT, DROP).
	policy map[string]string
}

func parseSave(out string) saveTables {
	st := saveTables{rules: map[string][]string{}, policy: map[string]string{}}
	bad := map[string]bool{}
	for _, line := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(line, "# Table `"); ok {
			if name, _, ok := strings.Cut(rest, "'"); ok {
				bad[name] = true
			}
		}
	}
	var b strings.Builder
	table, keep := "", false
	for _, line := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(line, "*"):
			table = strings.TrimPrefix(line, "*")
			keep = !bad[table]
			if keep {
				st.names = append(st.names, table)
			}
		case strings.HasPrefix(line, ":") && table != "":
			f := strings.Fields(strings.TrimPrefix(line, ":"))
			if len(f) >= 2 && f[1] != "-" {
				st.policy[table+" "+f[0]] = f[1]
			}
		case strings.HasPrefix(line, "-A ") && table != "":
			f := strings.Fields(line)
			if len(f) >= 2 {
				st.rules[table+" "+f[1]] = append(st.rules[table+" "+f[1]], line)
			}
		case strings.HasPrefix(line, "#") || strings.TrimSpace(line) == "":
			continue
		}
		if keep {
			b.WriteString(line)
			b.WriteByte('\n')
		}
		if line == "COMMIT" {
			table, keep = "", false
		}
	}
	st.text = b.String()
	return st
}

func (st saveTables) has(table string) bool {
	for _, n := range st.names {
		if n == table {
			return true
		}
	}
	return false
}
