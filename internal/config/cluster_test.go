package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestClusterSection(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "redis.pass"), []byte("# the fleet's ACL password\ns3cret-pass\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	good := decoyDoor + `group = "web"
[cluster]
redis = "rediss://sesame@redis.example:6380/2"
password_file = "redis.pass"
member = "gw1"
groups = ["ops"]
on_redis_down = "local"
timeout = "150ms"
`
	cfg, err := Parse(filepath.Join(dir, "sesame.toml"), []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	want := &Cluster{Redis: "rediss://sesame@redis.example:6380/2", Password: "s3cret-pass", Member: "gw1", Groups: []string{"ops"},
		OnRedisDown: ClusterLocal, Timeout: 150 * time.Millisecond, Prefix: DefaultClusterPrefix, StreamMaxLen: DefaultStreamMaxLen}
	if !reflect.DeepEqual(cfg.Cluster, want) {
		t.Errorf("cluster = %+v", cfg.Cluster)
	}
	if g := FleetGroups(cfg); !reflect.DeepEqual(g, []string{"ops", "web"}) {
		t.Errorf("groups = %v", g)
	}
	def, err := Parse(filepath.Join(dir, "sesame.toml"), []byte(decoyDoor+"[cluster]\nredis = \"unix:///run/redis/redis.sock\"\nmember = \"a\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c := def.Cluster; c.OnRedisDown != ClusterRefuse || c.Timeout != DefaultClusterTimeout {
		t.Errorf("defaults: %+v", c)
	}
	for _, tc := range []struct{ name, text, want string }{
		{"no redis", "[cluster]\nmember = \"a\"\n", "redis: is required"},
		{"password in URL", "[cluster]\nredis = \"redis://u:hunter2@h:6379\"\n", "a password does not belong in the URL"},
		{"bad scheme", "[cluster]\nredis = \"http://h\"\n", `scheme "http"`},
		{"relative socket", "[cluster]\nredis = \"unix://redis.sock\"\n", "absolute socket path"},
		{"bad mode", "[cluster]\nredis = \"redis://h\"\non_redis_down = \"open\"\n", `"open" is not valid`},
		{"long timeout", "[cluster]\nredis = \"redis://h\"\ntimeout = \"10s\"\n", "timeout"},
		{"group alone", decoyDoor + "group = \"web\"\n", "a group needs a [cluster] section"},
		{"bad group", "[cluster]\nredis = \"redis://h\"\ngroups = [\"a b\"]\n", "not a valid group name"},
		{"loose password", "[cluster]\nredis = \"redis://h\"\npassword_file = \"nope.pass\"\n", "password_file"},
		{"ca without tls", "[cluster]\nredis = \"redis://h\"\ntls_ca_file = \"/etc/ca.pem\"\n", "only a rediss://"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(filepath.Join(dir, "sesame.toml"), []byte(decoyDoor+strings.TrimPrefix(tc.text, decoyDoor)))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("the password is in the error: %v", err)
			}
		})
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"redis://h:6379/0":            "redis://h:6379/0",
		"rediss://sesame@h:6380":      "rediss://redacted@h:6380",
		"redis://u:pw@h":              "redis://redacted@h",
		"unix:///run/r.sock?db=1":     "unix:///run/r.sock",
		"redis://h/0?password=secret": "redis://h/0",
	} {
		if got := RedactURL(in); got != want || strings.Contains(got, "pw") || strings.Contains(got, "secret") {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}
