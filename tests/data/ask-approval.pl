#!/usr/bin/perl
# Asks its job's approval tool once, the way the agent CLI does: it reads the MCP configuration it was
# given (`--mcp-config <json>`), starts that server and calls `approval_prompt` for a Bash command, then
# reports the answer as the result. Used where a test needs a real approval row.
use strict;
use warnings;
use JSON::PP;
use IPC::Open2;

$| = 1;
my $config;
for my $i (0 .. $#ARGV - 1) { $config = $ARGV[$i + 1] if $ARGV[$i] eq '--mcp-config' }
die "no --mcp-config\n" unless defined $config;
my $server = decode_json($config)->{mcpServers}{televibe};
$ENV{$_} = $server->{env}{$_} for keys %{ $server->{env} || {} };
my $pid = open2(my $from, my $to, $server->{command}, @{ $server->{args} });
select((select($to), $| = 1)[0]);
print $to encode_json({jsonrpc => '2.0', id => 1, method => 'initialize', params => {
  protocolVersion => '2025-06-18', capabilities => {}, clientInfo => {name => 'asking-agent', version => '1'}}}) . "\n";
my $init = <$from>;
print $to encode_json({jsonrpc => '2.0', method => 'notifications/initialized'}) . "\n";
print $to encode_json({jsonrpc => '2.0', id => 2, method => 'tools/call', params => {
  name => 'approval_prompt',
  arguments => {tool_name => 'Bash', input => {command => 'echo asked > asked.txt'}, tool_use_id => 'toolu_ask'}}}) . "\n";
my $answer = <$from> // '';
close $to;
waitpid($pid, 0);
my $text = eval { decode_json($answer)->{result}{content}[0]{text} } // "no answer: $answer";
print encode_json({type => 'result', subtype => 'success', is_error => JSON::PP::false, num_turns => 1, result => $text}) . "\n";
