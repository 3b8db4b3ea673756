package client_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/internal/device/repository"
	"github.com/cofferhq/coffer/internal/server/devfleet"
)

// A phone stores its backup key in the vault under a password; a new phone,
// with no state and no key, gets it back with the password alone and
// restores the backup. The vault fleet is a development one on 127.0.0.1
// (an app talks to its operator's fleet instead), with the cheap key
// stretching of InsecureDevKSF so that the example runs in a second or two.
func ExampleRecoverKey() {
	if err := passwordRecovery(context.Background()); err != nil {
		fmt.Println("error:", err)
	}
	// Output:
	// a too short password: the password must be at least 8 characters
	// password recovery on: 10 wrong guesses allowed
	// wrong password: 9 guesses left of 10
	// recovered the phone's key: true
	// wrong guesses since the last recovery: 1
	// restored notes.txt: "remember the milk"
}

func passwordRecovery(ctx context.Context) error {
	dir, err := os.MkdirTemp("", "coffer-example-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	fleet, err := devfleet.Start(ctx, devfleet.Options{Dir: filepath.Join(dir, "fleet")})
	if err != nil {
		return err
	}
	defer fleet.Close()
	// The app's backend gives the device a short-lived token for the account.
	token, err := fleet.Token("ana@example.com", 15*time.Minute)
	if err != nil {
		return err
	}
	// And one for the vault, which travels sealed (the relay never sees it).
	vaultToken, err := fleet.VaultToken("ana@example.com", 15*time.Minute)
	if err != nil {
		return err
	}
	// Check the settings and verify the fleet bundle once; the loaded
	// settings carry it to every call below.
	vault, err := client.VaultSettings{
		Relay:          fleet.RelayURL,
		Account:        "ana@example.com",
		Token:          token,
		VaultToken:     vaultToken,
		Fleet:          fleet.BundlePath,
		FleetRoot:      fleet.RootPublic,
		InsecureDevKSF: true, // development fleets only
	}.Load()
	if err != nil {
		return err
	}

	// The phone sets up backups with a password, and backs a file up.
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(data, "notes.txt"), []byte("remember the milk"), 0o600); err != nil {
		return err
	}
	repo := filepath.Join(dir, "repo")
	password := []byte("correct horse battery staple")
	phone := client.NewDevice(filepath.Join(dir, "phone"))
	if err := client.ValidatePassword([]byte("hunter2")); err != nil {
		fmt.Println("a too short password:", err)
	}
	res, err := phone.InitWithPassword(ctx, repo, password, vault)
	if err != nil {
		return err
	}
	fingerprint := res.Key.Fingerprint()
	res.Key.Zero() // the vault keeps it now
	fmt.Printf("password recovery on: %d wrong guesses allowed\n", res.Enrollment.GuessLimit)
	r, err := phone.Open(ctx, client.OpenOptions{})
	if err != nil {
		return err
	}
	_, err = r.Backup(ctx, []string{data}, repository.BackupOptions{})
	r.Close()
	if err != nil {
		return err
	}

	// The phone is lost. On a new one, a wrong password costs a guess.
	_, _, err = client.RecoverKey(ctx, vault, []byte("correct horse battery stable"))
	var wrong *client.WrongPasswordError
	if !errors.As(err, &wrong) {
		return fmt.Errorf("a wrong password: %v", err)
	}
	fmt.Println(err)
	key, session, err := client.RecoverKey(ctx, vault, password)
	if err != nil {
		return err
	}
	defer key.Zero()
	fmt.Println("recovered the phone's key:", key.Fingerprint() == fingerprint)
	fmt.Println("wrong guesses since the last recovery:", session.FailedGuesses)
	backup, err := client.Open(ctx, repo, key)
	if err != nil {
		return err
	}
	defer backup.Close()
	to := filepath.Join(dir, "restored")
	if _, err := backup.Restore(ctx, 0, to, repository.RestoreOptions{}); err != nil {
		return err
	}
	b, err := os.ReadFile(filepath.Join(to, "data", "notes.txt"))
	if err != nil {
		return err
	}
	fmt.Printf("restored notes.txt: %q\n", b)
	return nil
}
