package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The upstream's trust in the downstream's ServiceAccount tokens (contract §3,
// "Other auth methods"): the audience it accepts, and the prefix of the users it
// makes of them.
const (
	UpstreamAudience  = "secret-relay-upstream"
	TrustedUserPrefix = "downstream:"
)

// StartTrustingPair starts the downstream control plane, then an upstream one that
// trusts the downstream's ServiceAccount tokens, as the README sets it up:
//   - the downstream issues tokens as https://127.0.0.1:<its port> and serves its
//     discovery document and keys there, to anyone (a ClusterRoleBinding of
//     system:service-account-issuer-discovery to system:unauthenticated). Without
//     --service-account-jwks-uri the document would name an address where nothing
//     listens;
//   - the upstream starts with --authentication-config: a JWT authenticator for that
//     issuer, its CA, audience UpstreamAudience, usernames from sub prefixed with
//     TrustedUserPrefix, and a rule that refuses system: names.
//
// The upstream keeps an audit log, as StartPair's does.
func StartTrustingPair(t testing.TB, downstream Options) (up, down *ControlPlane) {
	t.Helper()
	port := FreePort(t)
	issuer := "https://127.0.0.1:" + strconv.Itoa(port)
	downstream.Port = port
	args := map[string]string{}
	for k, v := range downstream.APIServerArgs {
		args[k] = v
	}
	args["service-account-issuer"] = issuer
	args["service-account-jwks-uri"] = issuer + "/openid/v1/jwks"
	downstream.APIServerArgs = args
	down = Start(t, "downstream", downstream)
	_, err := down.Client.RbacV1().ClusterRoleBindings().Create(context.Background(), &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "service-account-issuer-discovery-public"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "system:service-account-issuer-discovery"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "Group", Name: "system:unauthenticated"}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("could not open the downstream's issuer discovery: %v", err)
	}

	config := authenticationConfigPath(down)
	if err := os.WriteFile(config, []byte(AuthenticationConfig(issuer, UpstreamAudience, down.CA())), 0o600); err != nil {
		t.Fatal(err)
	}
	up = Start(t, "upstream", Options{AuditLog: true, APIServerArgs: map[string]string{"authentication-config": config}})
	return up, down
}

func authenticationConfigPath(down *ControlPlane) string {
	return filepath.Join(down.Dir(), "upstream-authentication.yaml")
}

// Distrust makes the upstream of StartTrustingPair stop trusting the downstream's
// tokens for UpstreamAudience, as an upstream admin removing the trust would: its
// authentication configuration then accepts another audience only, and its API
// server restarts to read it.
func Distrust(t testing.TB, up, down *ControlPlane) {
	t.Helper()
	issuer := strings.TrimSuffix(down.URL(), "/")
	if err := os.WriteFile(authenticationConfigPath(down), []byte(AuthenticationConfig(issuer, "nobody-uses-this", down.CA())), 0o600); err != nil {
		t.Fatal(err)
	}
	up.Stop(t)
	up.Restart(t)
}

// AuthenticationConfig is the upstream's structured authentication configuration
// that trusts tokens of issuer for audience, whose discovery ca verifies: the
// README's.
func AuthenticationConfig(issuer, audience string, ca []byte) string {
	indented := "      " + strings.ReplaceAll(strings.TrimSpace(string(ca)), "\n", "\n      ")
	return fmt.Sprintf(`apiVersion: apiserver.config.k8s.io/v1
kind: AuthenticationConfiguration
jwt:
- issuer:
    url: %s
    audiences: [%s]
    certificateAuthority: |
%s
  claimMappings:
    username:
      claim: sub
      prefix: %q
  userValidationRules:
  - expression: "!user.username.startsWith('system:')"
    message: "a name of the reserved system: prefix is refused"
`, issuer, audience, indented, TrustedUserPrefix)
}
