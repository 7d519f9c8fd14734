package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// writeOutputs prints the table and writes results.json and results.svg
// into dir, each by rename so a reader never sees half a file.
func writeOutputs(r Report, dir string, stdout, stderr io.Writer) error {
	if err := WriteTable(stdout, r); err != nil {
		return fmt.Errorf("print table: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("make output dir: %w", err)
	}
	js, err := r.JSON()
	if err != nil {
		return fmt.Errorf("encode results.json: %w", err)
	}
	for name, data := range map[string][]byte{"results.json": js, "results.svg": []byte(SVG(r))} {
		if err := writeFileAtomic(filepath.Join(dir, name), data); err != nil {
			return err
		}
	}
	fmt.Fprintf(stderr, "sandbox-bench: wrote %s and %s\n", filepath.Join(dir, "results.json"), filepath.Join(dir, "results.svg"))
	return nil
}

func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
