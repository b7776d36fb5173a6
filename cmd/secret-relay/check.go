package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/secret-relay/secret-relay/api/client/clientset/versioned"
	"github.com/secret-relay/secret-relay/api/v1alpha1"
	"github.com/secret-relay/secret-relay/remote"
)

const checkUsage = `Usage:
  secret-relay check [--kubeconfig K] [-n NS] NAME          a SecretStore
  secret-relay check [--kubeconfig K] [-n NS] SecretStore/NAME
  secret-relay check [--kubeconfig K] ClusterSecretStore/NAME

Checks, against the downstream cluster, step by step, that the store works: its
references resolve, the upstream is reachable, the CA verifies it, it accepts the
credentials (and as which user), and that user may get, list and watch Secrets in
remoteNamespace. It stops at the first failure, says how to fix it and exits 1.
`

// runCheck is `secret-relay check`. It prints every step to out, and returns an
// error naming the store when one fails.
func runCheck(ctx context.Context, args []string, out, errOut io.Writer) error {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(errOut)
	fs.Usage = func() { fmt.Fprint(errOut, checkUsage); fs.PrintDefaults() }
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig of the downstream cluster; default $KUBECONFIG, ~/.kube/config, then in-cluster")
	var namespace string
	fs.StringVar(&namespace, "namespace", "", "namespace of a SecretStore; default the kubeconfig context's")
	fs.StringVar(&namespace, "n", "", "shorthand for --namespace")
	// Flags may follow the store, as with kubectl.
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		positional, args = append(positional, fs.Arg(0)), fs.Args()[1:]
	}
	if len(positional) != 1 {
		fs.Usage()
		return errors.New("check takes one store")
	}
	kind, name := v1alpha1.SecretStoreKind, positional[0]
	if k, n, ok := strings.Cut(name, "/"); ok {
		kind, name = k, n
	}
	if kind != v1alpha1.SecretStoreKind && kind != v1alpha1.ClusterSecretStoreKind {
		return fmt.Errorf("%q is not SecretStore/NAME or ClusterSecretStore/NAME", positional[0])
	}

	loader := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		&clientcmd.ClientConfigLoadingRules{ExplicitPath: *kubeconfig, Precedence: clientcmd.NewDefaultClientConfigLoadingRules().Precedence},
		&clientcmd.ConfigOverrides{})
	cfg, err := loader.ClientConfig()
	if err != nil {
		return fmt.Errorf("could not load the downstream cluster config: %w", err)
	}
	if namespace == "" {
		if namespace, _, err = loader.Namespace(); err != nil || namespace == "" {
			namespace = "default"
		}
	}
	cfg.UserAgent = "secret-relay-check/" + version
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	stores, err := versioned.NewForConfig(cfg)
	if err != nil {
		return err
	}
	store, err := getStore(ctx, stores, kind, namespace, name)
	if err != nil {
		return err
	}

	fmt.Fprintf(out, "store %s\n", store)
	var failed remote.CheckStep
	result := remote.Check(ctx, store, remote.ClientsetRefReader(kube), remote.NewTokens(kube), func(s remote.CheckStep) {
		mark := "ok  "
		if !s.OK {
			mark, failed = "FAIL", s
		}
		line := "  " + mark + "  " + s.Name
		if s.Detail != "" {
			line += ": " + s.Detail
		}
		fmt.Fprintln(out, line)
		if !s.OK {
			fmt.Fprintln(out, "  fix:  "+s.Fix)
		}
	})
	if !result.OK {
		return fmt.Errorf("store %s: %s failed", store, failed.Name)
	}
	if result.User != "" {
		fmt.Fprintf(out, "store %s: the upstream accepted its credentials, as user %s\n", store, result.User)
	} else {
		fmt.Fprintf(out, "store %s: the upstream accepted its credentials\n", store)
	}
	return nil
}

// getStore reads the store to check, saying in a user's words when it is not there.
func getStore(ctx context.Context, api versioned.Interface, kind, namespace, name string) (*remote.Store, error) {
	var err error
	if kind == v1alpha1.ClusterSecretStoreKind {
		var s *v1alpha1.ClusterSecretStore
		if s, err = api.SecretRelayV1alpha1().ClusterSecretStores().Get(ctx, name, metav1.GetOptions{}); err == nil {
			return remote.StoreFromClusterSecretStore(s), nil
		}
	} else {
		var s *v1alpha1.SecretStore
		if s, err = api.SecretRelayV1alpha1().SecretStores(namespace).Get(ctx, name, metav1.GetOptions{}); err == nil {
			return remote.StoreFromSecretStore(s), nil
		}
	}
	if apierrors.IsNotFound(err) {
		if kind == v1alpha1.ClusterSecretStoreKind {
			return nil, fmt.Errorf("ClusterSecretStore %q not found", name)
		}
		return nil, fmt.Errorf("SecretStore %q not found in namespace %q", name, namespace)
	}
	return nil, fmt.Errorf("could not read %s %q: %s", kind, name, apierrors.ReasonForError(err))
}
