package test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/proxy/dial/dialtest"
)

// The directory the tests run: a school with two users in two groups and
// a service account that searches.
const (
	ldapSuffix      = "dc=school,dc=example"
	ldapRootDN      = "cn=admin," + ldapSuffix
	ldapRootPW      = "root-secret"
	ldapServiceDN   = "cn=sluice," + ldapSuffix
	ldapServicePW   = "service-secret"
	ldapStudentsDN  = "cn=students,ou=groups," + ldapSuffix
	ldapTeachersDN  = "cn=teachers,ou=groups," + ldapSuffix
	ldapPeopleDN    = "ou=people," + ldapSuffix
	ldapStudentPW   = "student pw*)(" // spaces and filter characters on purpose
	ldapTeacherPW   = "teacher-pw"
	ldapLatecomerPW = "latecomer-pw"
	ldapNewcomerPW  = "newcomer-pw"
	ldapPrincipalPW = "principal-pw"
)

// slapd is a real OpenLDAP server on a loopback port with its own
// database folder.
type slapd struct {
	url   string // ldap://127.0.0.1:PORT (StartTLS offered)
	addr  string
	ldaps string // ldaps://127.0.0.1:PORT
	caPEM []byte // the CA that signed slapd's certificate, for tls_ca
	cmd   *exec.Cmd
	done  chan struct{}
	logf  string // slapd's output
}

// Log returns what slapd printed.
func (s *slapd) Log() string {
	b, _ := os.ReadFile(s.logf)
	return string(b)
}

// startSlapd writes a slapd.conf (mdb database, memberof overlay, a
// certificate for 127.0.0.1) in a temp folder, runs slapd in the
// foreground on two free loopback ports (ldap:// with StartTLS, and
// ldaps://) and loads the school's entries with the real ldapadd. It is
// stopped at the end of the test.
func startSlapd(t *testing.T) *slapd {
	t.Helper()
	bin := requireTool(t, "slapd")
	ldapadd := requireTool(t, "ldapadd")
	dir := t.TempDir()
	db := filepath.Join(dir, "db")
	if err := os.Mkdir(db, 0o700); err != nil {
		t.Fatal(err)
	}
	_, certPEM, keyPEM := dialtest.SelfSigned(t)
	writeFiles(t, dir, map[string]string{"cert.pem": string(certPEM), "key.pem": string(keyPEM)})
	conf := fmt.Sprintf(`include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload memberof
pidfile %[1]s/slapd.pid
argsfile %[1]s/slapd.args
TLSCertificateFile %[1]s/cert.pem
TLSCertificateKeyFile %[1]s/key.pem
database mdb
maxsize 10485760
suffix "%[2]s"
rootdn "%[3]s"
rootpw %[4]s
directory %[5]s
overlay memberof
access to attrs=userPassword by anonymous auth by self read by * none
access to * by * read
`, dir, ldapSuffix, ldapRootDN, ldapRootPW, db)
	confPath := filepath.Join(dir, "slapd.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	s := &slapd{addr: dialtest.FreeAddr(t), done: make(chan struct{}), caPEM: certPEM}
	s.url = "ldap://" + s.addr
	s.ldaps = "ldaps://" + dialtest.FreeAddr(t)
	s.cmd = exec.Command(bin, "-h", s.url+"/ "+s.ldaps+"/", "-f", confPath, "-d", "0")
	s.logf = filepath.Join(dir, "slapd.log")
	lf, err := os.Create(s.logf)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	s.cmd.Stdout, s.cmd.Stderr = lf, lf
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.cmd.Wait(); close(s.done) }()
	t.Cleanup(s.stop)
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-s.done:
			t.Fatalf("slapd exited: %v\n%s", s.cmd.ProcessState, s.Log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("slapd did not listen on %s within 15s:\n%s", s.addr, s.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Users first: the memberof overlay writes memberOf into the entries
	// that exist when a group names them.
	ldif := fmt.Sprintf(`dn: %[1]s
objectClass: dcObject
objectClass: organization
dc: school
o: School

dn: %[2]s
objectClass: person
cn: sluice
sn: service
userPassword: %[3]s

dn: %[4]s
objectClass: organizationalUnit
ou: people

dn: ou=groups,%[1]s
objectClass: organizationalUnit
ou: groups

dn: uid=student,%[4]s
objectClass: inetOrgPerson
uid: student
cn: A Student
sn: Student
userPassword: %[5]s

dn: uid=teacher,%[4]s
objectClass: inetOrgPerson
uid: teacher
cn: A Teacher
sn: Teacher
userPassword: %[6]s

dn: uid=latecomer,%[4]s
objectClass: inetOrgPerson
uid: latecomer
cn: A Latecomer
sn: Latecomer
userPassword: %[7]s

dn: uid=newcomer,%[4]s
objectClass: inetOrgPerson
uid: newcomer
cn: A Newcomer
sn: Newcomer
userPassword: %[10]s

dn: uid=principal,%[4]s
objectClass: inetOrgPerson
uid: principal
cn: The Principal
sn: Principal
userPassword: %[11]s

dn: uid=nopass,%[4]s
objectClass: inetOrgPerson
uid: nopass
cn: No Password
sn: Nopass

dn: %[8]s
objectClass: groupOfNames
cn: students
member: uid=student,%[4]s
member: uid=latecomer,%[4]s

dn: %[9]s
objectClass: groupOfNames
cn: teachers
member: uid=teacher,%[4]s
member: uid=principal,%[4]s
`, ldapSuffix, ldapServiceDN, ldapServicePW, ldapPeopleDN, ldapStudentPW, ldapTeacherPW, ldapLatecomerPW,
		ldapStudentsDN, ldapTeachersDN, ldapNewcomerPW, ldapPrincipalPW)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	add := exec.CommandContext(ctx, ldapadd, "-x", "-H", s.url, "-D", ldapRootDN, "-w", ldapRootPW)
	add.Stdin = strings.NewReader(ldif)
	if out, err := add.CombinedOutput(); err != nil {
		t.Fatalf("ldapadd: %v\n%s\nslapd:\n%s", err, out, s.Log())
	}
	return s
}

// stop ends slapd (SIGTERM, then SIGKILL after 10 s) and waits for it;
// its port then refuses connections.
func (s *slapd) stop() {
	select {
	case <-s.done:
		return
	default:
	}
	s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
	}
}
