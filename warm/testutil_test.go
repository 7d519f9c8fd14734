package warm

import (
	"encoding/json"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/namespace"
	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/oci"
)

func jsonUnmarshalString(s string, v any) error { return json.Unmarshal([]byte(s), v) }

func namespaceOptions(c oci.Config) namespace.CreateOptions {
	return namespace.CreateOptions{Config: c}
}
