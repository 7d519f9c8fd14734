package oci

import "testing"

func TestMergePasswd(t *testing.T) {
	tests := []struct {
		name     string
		existing string
		users    []User
		want     string
	}{
		{
			name:  "empty image",
			users: []User{{Name: "u", UID: 1000, GID: 1000, Home: "/home/u"}},
			want: "root:x:0:0::/root:/bin/sh\n" +
				"nobody:x:65534:65534::/nonexistent:/bin/false\n" +
				"u:x:1000:1000::/home/u:/bin/sh\n",
		},
		{
			name:     "existing lines untouched, no trailing newline",
			existing: "root:x:0:0:Super User:/root:/bin/bash\n# comment\nnobody:*:65534:65534::/:/sbin/nologin",
			users:    []User{{Name: "u", UID: 1000, GID: 100, Shell: "/bin/bash"}},
			want: "root:x:0:0:Super User:/root:/bin/bash\n# comment\nnobody:*:65534:65534::/:/sbin/nologin\n" +
				"u:x:1000:100::/:/bin/bash\n",
		},
		{
			name:     "name exists: not added again",
			existing: "root:x:0:0::/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\nu:x:5:5::/:/bin/sh\n",
			users:    []User{{Name: "u", UID: 1000, GID: 1000}},
			want:     "root:x:0:0::/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\nu:x:5:5::/:/bin/sh\n",
		},
		{
			name:     "id taken by another name: named entry still added",
			existing: "root:x:0:0::/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\nubuntu:x:1000:1000::/home/ubuntu:/bin/sh\n",
			users:    []User{{Name: "alice", UID: 1000, GID: 1000, Home: "/home/alice"}},
			want:     "root:x:0:0::/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\nubuntu:x:1000:1000::/home/ubuntu:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n",
		},
		{
			name:     "unwritable user skipped",
			existing: "root:x:0:0::/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n",
			users:    []User{{Name: "a:b", UID: 1}, {Name: "c", UID: 2, Home: "/x\ny"}, {Name: "", UID: 3}},
			want:     "root:x:0:0::/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n",
		},
		{
			name:  "duplicate given users: first wins",
			users: []User{{Name: "u", UID: 1}, {Name: "u", UID: 2}},
			want:  "root:x:0:0::/root:/bin/sh\nnobody:x:65534:65534::/nonexistent:/bin/false\nu:x:1:0::/:/bin/sh\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(MergePasswd([]byte(tt.existing), tt.users...)); got != tt.want {
				t.Errorf("MergePasswd:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestMergeGroup(t *testing.T) {
	tests := []struct {
		name     string
		existing string
		groups   []Group
		want     string
	}{
		{
			name:   "empty image",
			groups: []Group{{Name: "u", GID: 1000, Members: []string{"u"}}},
			want:   "root:x:0:\nnobody:x:65534:\nu:x:1000:u\n",
		},
		{
			name:     "existing kept, nogroup does not stop nobody",
			existing: "root:x:0:\nnogroup:x:65534:\nusers:x:100:a,b\n",
			groups:   []Group{{Name: "users", GID: 100, Members: []string{"u"}}, {Name: "dev", GID: 1000, Members: []string{"u", "v"}}},
			want:     "root:x:0:\nnogroup:x:65534:\nusers:x:100:a,b\nnobody:x:65534:\ndev:x:1000:u,v\n",
		},
		{
			name:   "bad members skipped",
			groups: []Group{{Name: "g", GID: 5, Members: []string{"a,b"}}, {Name: "h", GID: 6, Members: []string{"x:y"}}},
			want:   "root:x:0:\nnobody:x:65534:\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(MergeGroup([]byte(tt.existing), tt.groups...)); got != tt.want {
				t.Errorf("MergeGroup:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}
