package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/testenv"
)

func TestCheckTemp(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T, base string) string // returns the temp root
		wantErr string
	}{
		{"created when missing", func(t *testing.T, base string) string {
			return filepath.Join(base, "lectic", "nix-sandbox")
		}, ""},
		{"in a sticky shared dir", func(t *testing.T, base string) string {
			shared := filepath.Join(base, "tmp")
			os.Mkdir(shared, 0o777)
			os.Chmod(shared, 0o777|os.ModeSticky)
			return filepath.Join(shared, "nix-sandbox")
		}, ""},
		{"a file in the way", func(t *testing.T, base string) string {
			p := filepath.Join(base, "nix-sandbox")
			os.WriteFile(p, nil, 0o600)
			return p
		}, "not a directory"},
		{"writable by others", func(t *testing.T, base string) string {
			p := filepath.Join(base, "nix-sandbox")
			os.Mkdir(p, 0o700)
			os.Chmod(p, 0o777)
			return p
		}, "writable by other users"},
		{"in a shared dir without the sticky bit", func(t *testing.T, base string) string {
			shared := filepath.Join(base, "lectic")
			os.Mkdir(shared, 0o777)
			os.Chmod(shared, 0o777)
			return filepath.Join(shared, "nix-sandbox")
		}, "other users may write to"},
		{"another user's", func(t *testing.T, base string) string {
			if os.Getuid() != 0 {
				testenv.Missing(t, "only root can make a dir another user owns")
			}
			p := filepath.Join(base, "nix-sandbox")
			os.Mkdir(p, 0o700)
			os.Chown(p, 12345, 12345)
			return p
		}, "belongs to uid 12345"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			temp := tt.setup(t, t.TempDir())
			err := checkTemp(temp)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("checkTemp: %v", err)
				}
				if st, serr := os.Stat(temp); serr != nil || st.Mode().Perm() != 0o700 {
					t.Fatalf("temp root not created 0700: %v %v", st, serr)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "LECTIC_TEMP") {
				t.Fatalf("checkTemp = %v, want an error with %q and what to do", err, tt.wantErr)
			}
		})
	}
}
