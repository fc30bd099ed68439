<?php
// One cron pass of a WooCommerce -> RedMart stock sync, written the way the public legacy
// integrations were (plain curl, a token file, hand-parsed headers), quirks included:
// - the token is cached in a file and read back with fread($f, filesize($file)), and PHP
//   caches filesize() for the process, so a token is read at the previous token's length;
// - raw response headers are split on ": " and the ETag looked up under the key "etag";
// - the ETag goes back verbatim in If-Match; the quantity is sent as a JSON string;
// - scope is sent with literal, unencoded spaces;
// - only the product read fetches a new token, and only on "error": "invalid_token";
//   stock calls ignore errors and 429s: the product stays pending for the next pass.
//
// Usage: php redmart_sync.php BASE_URL CLIENT_ID CLIENT_SECRET TOKEN_FILE STATE_FILE
// STATE_FILE is JSON: {"inventory": {rpc: stock, ...}, "locations": {rpc: id}, "synced":
// {rpc: stock}}; products whose stock differs from "synced" are pushed. Every outcome is
// printed as one JSON line, for the test to check against the platform's ledger.

[, $base, $client_id, $client_secret, $token_file, $state_file] = $argv;
$state = json_decode(file_get_contents($state_file), true);
$locations = $state['locations'] ?? [];
$synced = $state['synced'] ?? [];

function say(array $event): void
{
    echo json_encode($event), "\n";
}

function read_token(string $file): string
{
    $f = fopen($file, 'r');
    $token = fread($f, filesize($file));  // filesize() is cached within this process
    fclose($f);
    return trim($token);
}

function fetch_token(string $base, string $id, string $secret, string $file): ?string
{
    $ch = curl_init($base . '/oauth2/token');
    curl_setopt($ch, CURLOPT_POST, true);
    curl_setopt($ch, CURLOPT_POSTFIELDS, 'grant_type=client_credentials&client_id=' . $id
        . '&client_secret=' . $secret
        . '&scope=read:pickup-location read:product read:stock-lot write:stock-lot');
    curl_setopt($ch, CURLOPT_RETURNTRANSFER, true);
    $body = curl_exec($ch);
    $status = curl_getinfo($ch, CURLINFO_HTTP_CODE);
    curl_close($ch);
    $answer = json_decode($body, true);
    if ($status != 200 || empty($answer['access_token'])) {
        say(['event' => 'token_failed', 'status' => $status]);
        return null;
    }
    $f = fopen($file, 'w');
    fwrite($f, $answer['access_token']);
    fclose($f);
    say(['event' => 'token']);
    return read_token($file);
}

function call(string $method, string $url, string $token, ?string $body = null,
              array $extra = []): array
{
    $ch = curl_init($url);
    $headers = array_merge(['Authorization: Bearer ' . $token], $extra);
    curl_setopt($ch, CURLOPT_CUSTOMREQUEST, $method);
    curl_setopt($ch, CURLOPT_RETURNTRANSFER, true);
    curl_setopt($ch, CURLOPT_HEADER, true);
    if ($body !== null) {
        curl_setopt($ch, CURLOPT_POSTFIELDS, $body);
    }
    curl_setopt($ch, CURLOPT_HTTPHEADER, $headers);
    $raw = curl_exec($ch);
    $status = curl_getinfo($ch, CURLINFO_HTTP_CODE);
    $size = curl_getinfo($ch, CURLINFO_HEADER_SIZE);
    curl_close($ch);
    $parsed = [];
    foreach (explode("\r\n", substr($raw, 0, $size)) as $line) {
        if (strpos($line, ': ') !== false) {
            list($key, $value) = explode(': ', $line, 2);
            $parsed[$key] = $value;
        }
    }
    return [$status, $parsed, json_decode(substr($raw, $size), true)];
}

$token = (file_exists($token_file) && filesize($token_file) > 0) ? read_token($token_file)
    : fetch_token($base, $client_id, $client_secret, $token_file);

foreach ($state['inventory'] as $rpc => $stock) {
    if (isset($synced[$rpc]) && $synced[$rpc] == $stock) {
        continue;
    }
    if (!isset($locations[$rpc])) {
        $url = $base . '/v1/products/' . $rpc;
        [$status, , $product] = call('GET', $url, $token);
        if ($status == 401 && isset($product['error']) && $product['error'] == 'invalid_token') {
            $token = fetch_token($base, $client_id, $client_secret, $token_file);
            [$status, , $product] = call('GET', $url, $token);
        }
        if ($status != 200 || !($product['pickupLocations'][0]['id'] > 0)) {
            say(['event' => 'skipped', 'rpc' => $rpc, 'call' => 'product', 'status' => $status]);
            continue;
        }
        $locations[$rpc] = $product['pickupLocations'][0]['id'];
    }
    $lot = $base . '/v1/products/' . $rpc . '/pickup-locations/' . $locations[$rpc]
        . '/stock-lots/0';
    [$status, $headers] = call('GET', $lot, $token);
    if ($status != 200 || !isset($headers['etag'])) {
        say(['event' => 'skipped', 'rpc' => $rpc, 'call' => 'read', 'status' => $status]);
        continue;
    }
    [$status, , $updated] = call('PATCH', $lot, $token,
        '{"quantityAtPickupLocation": "' . $stock . '"}',
        ['Content-Type: application/merge-patch+json', 'If-Match: ' . $headers['etag']]);
    if ($status == 200) {
        $synced[$rpc] = $stock;
        say(['event' => 'updated', 'rpc' => $rpc, 'location' => $locations[$rpc],
             'quantity' => $updated['quantityAtPickupLocation']]);
    } else {
        say(['event' => 'skipped', 'rpc' => $rpc, 'call' => 'patch', 'status' => $status]);
    }
}

$state['locations'] = $locations;
$state['synced'] = $synced;
file_put_contents($state_file, json_encode($state));
