// Package ec2test is a local HTTP endpoint that speaks the EC2 query API for the three calls the
// aws-sg firewall backend makes, for tests: a double that keeps security group rules in memory,
// not a firewall.
//
// It answers AuthorizeSecurityGroupIngress (with TagSpecifications of resource type
// security-group-rule), RevokeSecurityGroupIngress by SecurityGroupRuleId, and
// DescribeSecurityGroupRules (filters group-id, tag:KEY and tag-key; MaxResults and NextToken
// paging) with XML bodies shaped like EC2's, and EC2's error document for everything else. It
// can answer the next calls with RequestLimitExceeded (HTTP 503) or a 500, and refuses a rule past
// a per-group limit with RulesPerSecurityGroupLimitExceeded, as EC2 does past its quota.
package ec2test

import (
	"encoding/xml"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Test credentials: the double checks that each request is signed with AccessKeyID.
const (
	AccessKeyID     = "AKIDSESAMETEST000000"
	SecretAccessKey = "sesame-test-secret-not-a-real-key"
	Region          = "us-east-1"
	OwnerID         = "123456789012"
)

// DefaultRuleLimit is EC2's default quota of inbound rules per security group.
const DefaultRuleLimit = 60

// Rule is one ingress rule the double holds.
type Rule struct {
	ID       string
	GroupID  string
	Proto    string // "tcp", "udp"
	FromPort int32
	ToPort   int32
	CIDR     string // IPv4 or IPv6 CIDR
	Tags     map[string]string
}

// Server is the double. Its zero value is not usable: call New.
type Server struct {
	srv *httptest.Server

	mu        sync.Mutex
	groups    map[string][]*Rule
	next      int
	throttle  int // the next calls answered with RequestLimitExceeded
	fail5xx   int // the next calls answered with InternalError
	calls     map[string]int
	unsigned  int
	ruleLimit int
}

// New starts the double on a loopback port with the security groups ids (each empty) and
// returns it; Close stops it.
func New(groups ...string) *Server {
	s := newServer(groups)
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	return s
}

// NewOn is New serving on l (e.g. a listener made in another network namespace).
func NewOn(l net.Listener, groups ...string) *Server {
	s := newServer(groups)
	s.srv = &httptest.Server{Listener: l, Config: &http.Server{Handler: http.HandlerFunc(s.serve)}}
	s.srv.Start()
	return s
}

func newServer(groups []string) *Server {
	s := &Server{groups: map[string][]*Rule{}, calls: map[string]int{}, ruleLimit: DefaultRuleLimit}
	for _, g := range groups {
		s.groups[g] = nil
	}
	return s
}

// URL is the endpoint to give the SDK as its BaseEndpoint.
func (s *Server) URL() string { return s.srv.URL }

// Close stops the double.
func (s *Server) Close() { s.srv.Close() }

// Throttle makes the next n calls answer RequestLimitExceeded.
func (s *Server) Throttle(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.throttle = n
}

// Fail5xx makes the next n calls answer HTTP 500 InternalError.
func (s *Server) Fail5xx(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail5xx = n
}

// SetRuleLimit sets how many ingress rules a group holds before EC2 refuses another.
func (s *Server) SetRuleLimit(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ruleLimit = n
}

// Calls reports how many requests of action (e.g. "AuthorizeSecurityGroupIngress") arrived,
// refused ones included.
func (s *Server) Calls(action string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[action]
}

// Unsigned reports how many requests came without a SigV4 signature by AccessKeyID.
func (s *Server) Unsigned() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.unsigned
}

// AddRule puts r into its group as if something else (an earlier run, an admin) had made it,
// giving it an id when it has none, and returns the id.
func (s *Server) AddRule(r Rule) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := r
	if c.ID == "" {
		c.ID = s.newID()
	}
	c.Tags = cloneTags(r.Tags)
	s.groups[c.GroupID] = append(s.groups[c.GroupID], &c)
	return c.ID
}

// Rules returns copies of the rules of group, in the order they were made.
func (s *Server) Rules(group string) []Rule {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Rule
	for _, r := range s.groups[group] {
		c := *r
		c.Tags = cloneTags(r.Tags)
		out = append(out, c)
	}
	return out
}

func cloneTags(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func (s *Server) newID() string {
	s.next++
	return fmt.Sprintf("sgr-%017x", s.next)
}

// apiError is an EC2 error answer.
type apiError struct {
	status  int
	code    string
	message string
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

func errorf(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, message: fmt.Sprintf(format, args...)}
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		writeError(w, errorf(400, "InvalidRequest", "read body: %v", err))
		return
	}
	q, err := url.ParseQuery(string(body))
	if err != nil {
		writeError(w, errorf(400, "InvalidQueryParameter", "%v", err))
		return
	}
	action := q.Get("Action")
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls[action]++
	if !strings.Contains(r.Header.Get("Authorization"), "Credential="+AccessKeyID+"/") {
		s.unsigned++
		writeError(w, errorf(401, "AuthFailure", "AWS was not able to validate the provided access credentials"))
		return
	}
	if s.throttle > 0 {
		s.throttle--
		writeError(w, errorf(503, "RequestLimitExceeded", "Request limit exceeded."))
		return
	}
	if s.fail5xx > 0 {
		s.fail5xx--
		writeError(w, errorf(500, "InternalError", "An internal error has occurred."))
		return
	}
	var out any
	switch action {
	case "AuthorizeSecurityGroupIngress":
		out, err = s.authorize(q)
	case "RevokeSecurityGroupIngress":
		out, err = s.revoke(q)
	case "DescribeSecurityGroupRules":
		out, err = s.describe(q)
	default:
		err = errorf(400, "InvalidAction", "The action %s is not valid for this web service.", action)
	}
	if err != nil {
		writeError(w, err.(*apiError))
		return
	}
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	io.WriteString(w, xml.Header)
	xml.NewEncoder(w).Encode(out) // the types above always encode; a client gone is no matter
}

// writeError writes EC2's error document.
func writeError(w http.ResponseWriter, e *apiError) {
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	w.WriteHeader(e.status)
	fmt.Fprintf(w, "%s<Response><Errors><Error><Code>%s</Code><Message>%s</Message></Error></Errors><RequestID>ec2test</RequestID></Response>",
		xml.Header, xmlEscape(e.code), xmlEscape(e.message))
}

func xmlEscape(s string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(s))
	return b.String()
}

// list returns the values of the query list prefix.1, prefix.2, ... (prefix.N.suffix when
// suffix is not empty), stopping at the first gap.
func list(q url.Values, prefix, suffix string) []string {
	var out []string
	for i := 1; i <= 1000; i++ {
		k := prefix + "." + strconv.Itoa(i)
		if suffix != "" {
			k += "." + suffix
		}
		v, ok := q[k]
		if !ok {
			return out
		}
		out = append(out, v[0])
	}
	return out
}

const xmlns = "http://ec2.amazonaws.com/doc/2016-11-15/"

type xmlTag struct {
	Key   string `xml:"key"`
	Value string `xml:"value"`
}

type xmlRule struct {
	GroupID      string   `xml:"groupId"`
	GroupOwnerID string   `xml:"groupOwnerId"`
	IsEgress     bool     `xml:"isEgress"`
	IPProtocol   string   `xml:"ipProtocol"`
	FromPort     int32    `xml:"fromPort"`
	ToPort       int32    `xml:"toPort"`
	CIDRv4       string   `xml:"cidrIpv4,omitempty"`
	CIDRv6       string   `xml:"cidrIpv6,omitempty"`
	RuleID       string   `xml:"securityGroupRuleId"`
	RuleARN      string   `xml:"securityGroupRuleArn"`
	Tags         []xmlTag `xml:"tagSet>item"`
}

func toXML(r *Rule) xmlRule {
	x := xmlRule{GroupID: r.GroupID, GroupOwnerID: OwnerID, IPProtocol: r.Proto, FromPort: r.FromPort, ToPort: r.ToPort, RuleID: r.ID,
		RuleARN: "arn:aws:ec2:" + Region + ":" + OwnerID + ":security-group-rule/" + r.ID}
	if strings.Contains(r.CIDR, ":") {
		x.CIDRv6 = r.CIDR
	} else {
		x.CIDRv4 = r.CIDR
	}
	keys := make([]string, 0, len(r.Tags))
	for k := range r.Tags {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		x.Tags = append(x.Tags, xmlTag{k, r.Tags[k]})
	}
	return x
}

type authorizeResponse struct {
	XMLName   xml.Name  `xml:"AuthorizeSecurityGroupIngressResponse"`
	Xmlns     string    `xml:"xmlns,attr"`
	RequestID string    `xml:"requestId"`
	Return    bool      `xml:"return"`
	Rules     []xmlRule `xml:"securityGroupRuleSet>item"`
}

func (s *Server) group(q url.Values) (string, error) {
	g := q.Get("GroupId")
	if g == "" {
		return "", errorf(400, "MissingParameter", "The request must contain the parameter groupId")
	}
	if _, ok := s.groups[g]; !ok {
		return "", errorf(400, "InvalidGroup.NotFound", "The security group '%s' does not exist", g)
	}
	return g, nil
}

func (s *Server) authorize(q url.Values) (any, error) {
	g, err := s.group(q)
	if err != nil {
		return nil, err
	}
	tags := map[string]string{}
	for i := 1; i <= 50; i++ {
		p := "TagSpecification." + strconv.Itoa(i)
		rt, ok := q[p+".ResourceType"]
		if !ok {
			break
		}
		if rt[0] != "security-group-rule" {
			return nil, errorf(400, "InvalidParameterValue", "'%s' is not a valid taggable resource type for this operation.", rt[0])
		}
		keys := list(q, p+".Tag", "Key")
		vals := list(q, p+".Tag", "Value")
		for j, k := range keys {
			if j < len(vals) {
				tags[k] = vals[j]
			}
		}
	}
	var made []*Rule
	for i := 1; i <= 50; i++ {
		p := "IpPermissions." + strconv.Itoa(i)
		proto, ok := q[p+".IpProtocol"]
		if !ok {
			break
		}
		if proto[0] != "tcp" && proto[0] != "udp" {
			return nil, errorf(400, "InvalidParameterValue", "ec2test: protocol %q is not modelled", proto[0])
		}
		from, err1 := strconv.Atoi(q.Get(p + ".FromPort"))
		to, err2 := strconv.Atoi(q.Get(p + ".ToPort"))
		if err1 != nil || err2 != nil || from < 0 || to > 65535 || from > to {
			return nil, errorf(400, "InvalidParameterValue", "Invalid port range %q-%q", q.Get(p+".FromPort"), q.Get(p+".ToPort"))
		}
		cidrs := append(list(q, p+".IpRanges", "CidrIp"), list(q, p+".Ipv6Ranges", "CidrIpv6")...)
		if len(cidrs) == 0 {
			return nil, errorf(400, "InvalidParameterValue", "ec2test: only CIDR sources are modelled")
		}
		for _, c := range cidrs {
			r := &Rule{GroupID: g, Proto: proto[0], FromPort: int32(from), ToPort: int32(to), CIDR: c, Tags: cloneTags(tags)}
			for _, o := range append(slices.Clone(s.groups[g]), made...) {
				if o.Proto == r.Proto && o.FromPort == r.FromPort && o.ToPort == r.ToPort && o.CIDR == r.CIDR {
					return nil, errorf(400, "InvalidPermission.Duplicate", "the specified rule \"peer: %s, %s, from port: %d, to port: %d, ALLOW\" already exists", c, strings.ToUpper(r.Proto), from, to)
				}
			}
			made = append(made, r)
		}
	}
	if len(made) == 0 {
		return nil, errorf(400, "MissingParameter", "No IpPermissions given")
	}
	if len(s.groups[g])+len(made) > s.ruleLimit {
		return nil, errorf(400, "RulesPerSecurityGroupLimitExceeded", "The maximum number of rules per security group has been reached.")
	}
	resp := authorizeResponse{Xmlns: xmlns, RequestID: "ec2test", Return: true}
	for _, r := range made {
		r.ID = s.newID()
		s.groups[g] = append(s.groups[g], r)
		resp.Rules = append(resp.Rules, toXML(r))
	}
	return resp, nil
}

type revokedRule struct {
	RuleID     string `xml:"securityGroupRuleId"`
	GroupID    string `xml:"groupId"`
	IsEgress   bool   `xml:"isEgress"`
	IPProtocol string `xml:"ipProtocol"`
	FromPort   int32  `xml:"fromPort"`
	ToPort     int32  `xml:"toPort"`
	CIDRv4     string `xml:"cidrIpv4,omitempty"`
	CIDRv6     string `xml:"cidrIpv6,omitempty"`
}

type revokeResponse struct {
	XMLName   xml.Name      `xml:"RevokeSecurityGroupIngressResponse"`
	Xmlns     string        `xml:"xmlns,attr"`
	RequestID string        `xml:"requestId"`
	Return    bool          `xml:"return"`
	Revoked   []revokedRule `xml:"revokedSecurityGroupRuleSet>item"`
}

func (s *Server) revoke(q url.Values) (any, error) {
	g, err := s.group(q)
	if err != nil {
		return nil, err
	}
	ids := list(q, "SecurityGroupRuleId", "")
	if len(ids) == 0 {
		return nil, errorf(400, "MissingParameter", "ec2test: only revocation by SecurityGroupRuleId is modelled")
	}
	// EC2 refuses the whole call when one id is not in the group.
	for _, id := range ids {
		if !slices.ContainsFunc(s.groups[g], func(r *Rule) bool { return r.ID == id }) {
			return nil, errorf(400, "InvalidSecurityGroupRuleId.NotFound", "The security group rule ID '%s' does not exist", id)
		}
	}
	resp := revokeResponse{Xmlns: xmlns, RequestID: "ec2test", Return: true}
	s.groups[g] = slices.DeleteFunc(s.groups[g], func(r *Rule) bool {
		if !slices.Contains(ids, r.ID) {
			return false
		}
		x := toXML(r)
		resp.Revoked = append(resp.Revoked, revokedRule{RuleID: r.ID, GroupID: g, IPProtocol: r.Proto, FromPort: r.FromPort, ToPort: r.ToPort, CIDRv4: x.CIDRv4, CIDRv6: x.CIDRv6})
		return true
	})
	return resp, nil
}

type describeResponse struct {
	XMLName   xml.Name  `xml:"DescribeSecurityGroupRulesResponse"`
	Xmlns     string    `xml:"xmlns,attr"`
	RequestID string    `xml:"requestId"`
	Rules     []xmlRule `xml:"securityGroupRuleSet>item"`
	NextToken string    `xml:"nextToken,omitempty"`
}

func (s *Server) describe(q url.Values) (any, error) {
	type filter struct {
		name   string
		values []string
	}
	var filters []filter
	for i := 1; i <= 50; i++ {
		p := "Filter." + strconv.Itoa(i)
		n, ok := q[p+".Name"]
		if !ok {
			break
		}
		filters = append(filters, filter{n[0], list(q, p+".Value", "")})
	}
	match := func(r *Rule) (bool, error) {
		for _, f := range filters {
			var ok bool
			switch {
			case f.name == "group-id":
				ok = slices.Contains(f.values, r.GroupID)
			case f.name == "tag-key":
				ok = slices.ContainsFunc(f.values, func(k string) bool { _, has := r.Tags[k]; return has })
			case strings.HasPrefix(f.name, "tag:"):
				v, has := r.Tags[strings.TrimPrefix(f.name, "tag:")]
				ok = has && slices.Contains(f.values, v)
			default:
				return false, errorf(400, "InvalidParameterValue", "ec2test: filter %q is not modelled", f.name)
			}
			if !ok {
				return false, nil
			}
		}
		return true, nil
	}
	var all []*Rule
	groups := make([]string, 0, len(s.groups))
	for g := range s.groups {
		groups = append(groups, g)
	}
	slices.Sort(groups)
	for _, g := range groups {
		for _, r := range s.groups[g] {
			ok, err := match(r)
			if err != nil {
				return nil, err
			}
			if ok {
				all = append(all, r)
			}
		}
	}
	max := 1000
	if v := q.Get("MaxResults"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 5 || n > 1000 {
			return nil, errorf(400, "InvalidParameterValue", "MaxResults must be 5-1000, got %q", v)
		}
		max = n
	}
	start := 0
	if t := q.Get("NextToken"); t != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(t, "page-"))
		if err != nil || n < 0 || n > len(all) {
			return nil, errorf(400, "InvalidPaginationToken", "bad NextToken %q", t)
		}
		start = n
	}
	resp := describeResponse{Xmlns: xmlns, RequestID: "ec2test"}
	end := min(start+max, len(all))
	for _, r := range all[start:end] {
		resp.Rules = append(resp.Rules, toXML(r))
	}
	if end < len(all) {
		resp.NextToken = "page-" + strconv.Itoa(end)
	}
	return resp, nil
}
