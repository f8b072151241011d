package fsutil

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
)

func TestWriteFileReplacesAtomically(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "out.txt")
	for _, content := range []string{"first", "second, longer"} {
		if err := WriteFile(path, []byte(content)); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != content {
			t.Fatalf("read %q, %v; want %q", got, err, content)
		}
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", st.Mode().Perm())
	}
	assertOnly(t, dir, "out.txt")
}

func TestAbortLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "out.bin")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("half written")); err != nil {
		t.Fatal(err)
	}
	f.Abort()
	f.Abort() // idempotent
	got, _ := os.ReadFile(path)
	if string(got) != "old" {
		t.Errorf("aborted write changed the file to %q", got)
	}
	assertOnly(t, dir, "out.bin")
	if err := f.Commit(); err != nil { // no-op after Abort
		t.Fatal(err)
	}
	got, _ = os.ReadFile(path)
	if string(got) != "old" {
		t.Errorf("Commit after Abort changed the file to %q", got)
	}
}

func TestCreateInMissingDirFails(t *testing.T) {
	if _, err := Create(filepath.Join(t.TempDir(), "no", "such", "file")); err == nil {
		t.Fatal("Create in a missing directory succeeded")
	}
}

func TestHashes(t *testing.T) {
	data := []byte("whittle")
	sum := sha256.Sum256(data)
	want := hex.EncodeToString(sum[:])
	if got := HashBytes(data); got != want {
		t.Errorf("HashBytes = %s, want %s", got, want)
	}
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := HashFile(path); err != nil || got != want {
		t.Errorf("HashFile = %s, %v; want %s", got, err, want)
	}
}

func assertOnly(t *testing.T, dir string, names ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != len(names) {
		var got []string
		for _, e := range ents {
			got = append(got, e.Name())
		}
		t.Fatalf("directory holds %v, want only %v", got, names)
	}
}
